package image

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Remote opens files that live behind a URL (https://, http://, s3://):
// the image the user names, and the files a remote image names (extents,
// backing files, parents). Package reader/remote provides one; without one
// a URL is refused.
//
// The Source it returns reads through the network: Fd is -1, Remote is
// set, and Path is the URL as it may be shown (credentials redacted).
type Remote interface {
	OpenRemote(url string) (Source, io.Closer, error)
}

// IsURL reports whether name is a URL a Remote opens rather than a local
// path: it starts with http://, https:// or s3:// (in any case). A local
// file whose path looks like one is named ./https://... instead.
func IsURL(name string) bool {
	i := strings.Index(name, "://")
	if i <= 0 {
		return false
	}
	switch strings.ToLower(name[:i]) {
	case "http", "https", "s3":
		return true
	}
	return false
}

// File is a file opened as plain bytes: a local file or block device, or a
// remote object.
type File struct {
	Source
	// OS is the local file; nil for a remote one.
	OS     *os.File
	closer io.Closer
}

// Close closes the file.
func (f *File) Close() error {
	if f.OS != nil {
		return f.OS.Close()
	}
	if f.closer != nil {
		return f.closer.Close()
	}
	return nil
}

// OpenFile opens name, a path or (with opts.Remote) a URL, as plain bytes:
// a regular file, a block device or a remote object. Nothing resolves or
// checks name here: callers resolve names an image records with
// ResolveName first.
func OpenFile(name string, opts *Options) (*File, error) {
	if IsURL(name) {
		if opts == nil || opts.Remote == nil {
			return nil, fmt.Errorf("%s: %w: remote sources cannot be read here", name, ErrUnsupported)
		}
		src, c, err := opts.Remote.OpenRemote(name)
		if err != nil {
			return nil, err
		}
		return &File{Source: src, closer: c}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	var size int64
	switch m := fi.Mode(); {
	case m.IsRegular():
		size = fi.Size()
	case m.IsDir():
		f.Close()
		return nil, fmt.Errorf("%s: is a directory, not a disk image", name)
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		// A block device: its size is where a seek to the end lands.
		size, err = f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: finding the size of the block device: %w", name, err)
		}
	default:
		f.Close()
		return nil, fmt.Errorf("%s: a %s is not a disk image: give a regular file or a block device", name, m.Type())
	}
	return &File{
		Source: Source{R: f, Size: size, Path: name, Fd: int(f.Fd()), Device: fi.Mode()&os.ModeDevice != 0},
		OS:     f,
	}, nil
}
