package image

import (
	"errors"
	"fmt"
	"os"
)

// FileSet is implemented by images that read files: the file they were
// opened from, extent files, and (through their backing images) every file
// of the backing chain. Images that read no file of their own (an OVA's
// disk, a section) need not implement it.
type FileSet interface {
	// Files returns the open files the image reads. The caller must not
	// close them.
	Files() []*os.File
}

// Files returns every open file im reads, through wrapping images and
// backing chains; nil when im says nothing.
func Files(im Image) []*os.File {
	if im == nil {
		return nil
	}
	if fs, ok := im.(FileSet); ok {
		return fs.Files()
	}
	if u, ok := im.(interface{ Unwrap() Image }); ok {
		return Files(u.Unwrap())
	}
	return nil
}

// ErrSameFile: the output would overwrite a file the input reads.
var ErrSameFile = errors.New("the output is a file the input reads")

// SameFile refuses an output path that is one of the files im reads: the
// same device and inode, through symbolic links and hard links. A path that
// does not exist yet is fine.
func SameFile(im Image, outputPath string) error {
	fi, err := os.Stat(outputPath)
	if err != nil {
		return nil // not there (yet): nothing to overwrite
	}
	return SameFileInfo(im, outputPath, fi)
}

// SameFileInfo is SameFile for an output already open (stdout redirected
// to a file): fi describes it, name is what the user calls it.
func SameFileInfo(im Image, name string, fi os.FileInfo) error {
	for _, f := range Files(im) {
		in, err := f.Stat()
		if err != nil {
			continue
		}
		if os.SameFile(in, fi) {
			return fmt.Errorf("%w: %s is %s (same device and inode): writing it would destroy the image while it is read; give another output", ErrSameFile, name, f.Name())
		}
	}
	return nil
}
