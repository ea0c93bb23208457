//go:build linux

package writer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// createAnon opens an anonymous file in dir (O_TMPFILE): it has no name
// until linkAnon gives it one, so a process killed with SIGKILL leaves
// nothing behind; the kernel frees it. It returns nil, nil where the file
// system cannot (EOPNOTSUPP, EISDIR on old kernels): the caller then falls
// back to a named temporary file.
func createAnon(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) && dirExists(dir) {
			return nil, nil
		}
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, "(anonymous)")), nil
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// linkAnon gives the anonymous file f the name tmp (linkat through
// /proc/self/fd, which needs no privilege); the caller renames tmp onto
// the final name, which replaces an existing file atomically.
func linkAnon(f *os.File, tmp string) error {
	proc := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, tmp, unix.AT_SYMLINK_FOLLOW); err != nil {
		return &os.LinkError{Op: "link", Old: "(anonymous output)", New: tmp, Err: err}
	}
	return nil
}
