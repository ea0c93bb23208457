//go:build linux || darwin || freebsd

package image

import (
	"errors"

	"golang.org/x/sys/unix"
)

// FileExtent describes the run of the file behind fd that starts at off and
// is at most n bytes long: a hole (it reads as zeros and need not be read)
// or data, found with SEEK_DATA and SEEK_HOLE. Where that cannot be told
// (fd is -1, a device or a file system without holes), it is all data.
// RAW files, flat VMDK extents and the preallocated blocks of static VDI
// and fixed VHDX files are sparse this way when made with ftruncate.
func FileExtent(fd int, off, n int64) (length int64, hole bool) {
	if fd < 0 || n <= 0 {
		return n, false
	}
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return n, true // no data from off to the end of the file
	case err != nil:
		return n, false
	case data > off:
		return min(n, data-off), true
	}
	end, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || end <= off {
		return n, false
	}
	return min(n, end-off), false
}

// HoleAt is how many bytes from off, at most n, are a hole of the file
// behind fd: 0 when off holds data or nothing can be told.
func HoleAt(fd int, off, n int64) int64 {
	if k, hole := FileExtent(fd, off, n); hole {
		return k
	}
	return 0
}
