//go:build !unix

package testkit

import (
	"errors"
	"os"
	"testing"
	"time"
)

// allocated is the file's size where the allocated size is not known.
func allocated(t testing.TB, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// MaxRSS is 0: not known here.
func MaxRSS(*os.ProcessState) int64 { return 0 }

// SetFileLimit is not supported without RLIMIT_NOFILE.
func SetFileLimit(uint64) error { return errors.ErrUnsupported }

// Mkfifo is not supported without named pipes in the file system.
func Mkfifo(string) error { return errors.ErrUnsupported }

// CPUTime is 0: not measured here.
func CPUTime() time.Duration { return 0 }

// Lock: no file locks here; test binaries that install a tool into a
// shared cache may then do it twice, which only costs time.
func Lock(*os.File) (unlock func(), err error) { return func() {}, nil }
