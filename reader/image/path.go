package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ResolvePath turns a file name recorded inside an image (a backing file, an
// extent, a parent) into a path that may be opened.
//
// A relative name is taken relative to the folder of the image that records
// it. The result, with every symlink followed, must lie inside that folder or
// inside one of opts.AllowPaths; outside those only a regular file is never
// enough. Inside the image's own folder the file must be a regular file;
// inside a folder the user allowed, a block device is accepted too. FIFOs,
// sockets and character devices are always refused: reading them could hang
// or have side effects.
func ResolvePath(imagePath, name string, opts *Options) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty file name", ErrNotAllowed)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: file name %q holds a NUL byte", ErrNotAllowed, name)
	}
	base, err := filepath.Abs(filepath.Dir(imagePath))
	if err != nil {
		return "", err
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(base, p)
	}
	within := func(dir, path string) bool {
		rel, err := filepath.Rel(dir, path)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
	}
	// inside reports whether path lies in dir, comparing both as written
	// and with symlinks resolved.
	inside := func(dir, path string) bool {
		if within(filepath.Clean(dir), path) {
			return true
		}
		d, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return false
		}
		d, err = filepath.Abs(d)
		return err == nil && within(d, path)
	}
	allowedDir := func(path string) bool {
		if opts == nil {
			return false
		}
		for _, d := range opts.AllowPaths {
			if ad, err := filepath.Abs(d); err == nil && inside(ad, path) {
				return true
			}
		}
		return false
	}
	outside := func(path string) error {
		return fmt.Errorf("%w: %q named by %s resolves to %s, outside the image's folder %s (allow it with --allow-path)", ErrNotAllowed, name, imagePath, path, base)
	}
	// Refuse on the name alone first, so that a name like ../../etc/passwd
	// is refused for what it is, whether or not the file exists.
	p = filepath.Clean(p)
	allowed := allowedDir(p)
	if !allowed && !inside(base, p) {
		return "", outside(p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("file %q named by %s: %w", name, imagePath, err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	// Then again with symlinks followed: a link must not lead out either.
	allowed = allowedDir(real)
	if !allowed && !inside(base, real) {
		return "", outside(real)
	}
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
	case mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0 && allowed:
	default:
		return "", fmt.Errorf("%w: %q named by %s is not a regular file (%s)", ErrNotAllowed, name, imagePath, mode.Type())
	}
	return real, nil
}
