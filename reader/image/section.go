package image

import (
	"fmt"
	"io"
)

// ReadFull reads exactly len(p) bytes at off from r, which holds size bytes.
// A read that would pass size is refused before any I/O, with an error naming
// what was being read, so that header fields can never send a reader past the
// end of its file.
func ReadFull(r io.ReaderAt, size int64, p []byte, off int64, path, format, what string) error {
	if off < 0 || int64(len(p)) > size || off > size-int64(len(p)) {
		return Corruptf(path, format, off, "%s (%d bytes) lies past the end of the file (%d bytes)", what, len(p), size)
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: %s: reading %s at offset %d: %w", path, format, what, off, err)
}

// CheckRange reports whether [off, off+n) lies inside [0, size) without
// overflow.
func CheckRange(off, n, size int64) bool {
	return off >= 0 && n >= 0 && n <= size && off <= size-n
}

// Clip shortens a read at off of length n to the virtual size, returning the
// length to fill and whether the read passes the end.
func Clip(off int64, n int, size int64) (int, bool) {
	if off >= size {
		return 0, true
	}
	if int64(n) > size-off {
		return int(size - off), true
	}
	return n, false
}
