//go:build unix

package kv

import (
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive lock on the file at path (flock: it goes with
// the process, so a killed one holds none), creating it.
func lockDir(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
