//go:build !(linux || darwin || freebsd)

package image

// FileExtent describes the run of the file behind fd that starts at off and
// is at most n bytes long. Without SEEK_DATA and SEEK_HOLE (Windows) it is
// all data: holes are still found by the zero detection of the pass, only
// they are read.
func FileExtent(fd int, off, n int64) (length int64, hole bool) {
	return n, false
}

// HoleAt is how many bytes from off, at most n, are a hole of the file
// behind fd: always 0 here (see FileExtent).
func HoleAt(fd int, off, n int64) int64 { return 0 }
