package vdi

import (
	"errors"

	"golang.org/x/sys/unix"
)

// holeAt reports how many bytes from off, at most n, are a hole of the
// file behind fd (they read as zeros and need not be read), using
// SEEK_DATA. It answers 0 when fd is -1, the file system cannot tell, or
// off holds data. A static or fixed image made with ftruncate has its
// unwritten blocks as holes; this lets the pipeline skip them as qemu does.
func holeAt(fd int, off, n int64) int64 {
	if fd < 0 || n <= 0 {
		return 0
	}
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return n // no data from off to the end of the file
	case err != nil || data <= off:
		return 0
	}
	return min(n, data-off)
}
