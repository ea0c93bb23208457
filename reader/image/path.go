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
	inside := func(dir string) bool {
		d, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return false
		}
		d, err = filepath.Abs(d)
		if err != nil {
			return false
		}
		rel, err := filepath.Rel(d, real)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
	}
	allowed := false
	if opts != nil {
		for _, d := range opts.AllowPaths {
			if inside(d) {
				allowed = true
				break
			}
		}
	}
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
	case mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0 && allowed:
	default:
		return "", fmt.Errorf("%w: %q named by %s is not a regular file (%s)", ErrNotAllowed, name, imagePath, mode.Type())
	}
	if !allowed && !inside(base) {
		return "", fmt.Errorf("%w: %q named by %s resolves to %s, outside the image's folder %s (allow it with --allow-path)", ErrNotAllowed, name, imagePath, real, base)
	}
	return real, nil
}
