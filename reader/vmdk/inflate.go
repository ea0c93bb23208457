package vmdk

// Inflating compressed grains (streamOptimized): deflate streams in zlib
// format, through klauspost/compress.

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// inflater is a pooled zlib decoder: grains are RFC 1950 streams.
type inflater struct {
	br bytes.Reader
	zr io.ReadCloser
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

var errTooLong = errors.New("inflates to more than one grain")

// inflate decodes the zlib stream src into dst, which it may fill
// completely but not overflow; it checks the stream's Adler-32 checksum.
func inflate(dst, src []byte) (int, error) {
	z := inflaters.Get().(*inflater)
	z.br.Reset(src)
	var err error
	if z.zr == nil {
		z.zr, err = zlib.NewReader(&z.br)
	} else {
		err = z.zr.(zlib.Resetter).Reset(&z.br, nil)
	}
	if err != nil {
		z.zr = nil
		inflaters.Put(z)
		return 0, err
	}
	n := 0
	for n < len(dst) && err == nil {
		var m int
		m, err = z.zr.Read(dst[n:])
		n += m
	}
	switch {
	case err == io.EOF:
		err = nil // the stream ended, maybe short: the caller checks the length
	case err == nil:
		// dst is full: the stream must end here (this also checks the
		// checksum, read after the last block).
		var one [1]byte
		m, err2 := z.zr.Read(one[:])
		for m == 0 && err2 == nil {
			m, err2 = z.zr.Read(one[:])
		}
		switch {
		case m > 0:
			err = errTooLong
		case err2 != io.EOF:
			err = err2
		}
	case err == io.ErrUnexpectedEOF:
		err = errors.New("the compressed stream is cut short")
	}
	if err != nil {
		z.zr = nil
	}
	inflaters.Put(z)
	return n, err
}
