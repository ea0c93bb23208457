package qcow2

import (
	"bytes"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	limaqcow2 "github.com/lima-vm/go-qcow2reader/image/qcow2"
	limalog "github.com/lima-vm/go-qcow2reader/log"
)

// go-qcow2reader keeps its decompressors in a package-level table and its
// warning logger in a package-level variable: process-wide state, set here
// and nowhere else, once (registerOnce), before the first image is opened.
// It makes a new inflater for every compressed cluster; we register pooled
// klauspost decompressors: each compressed cluster costs one pread of its
// bytes and a Reset of a pooled decoder, and Read fills the caller's buffer
// completely, so the library never re-inflates a cluster after a short read.
var registerOnce sync.Once

func register() {
	registerOnce.Do(func() {
		limaqcow2.SetDecompressor(limaqcow2.CompressionTypeZlib, func(r io.Reader) (io.ReadCloser, error) {
			return newInflater(r, false)
		})
		limaqcow2.SetDecompressor(limaqcow2.CompressionTypeZstd, func(r io.Reader) (io.ReadCloser, error) {
			return newInflater(r, true)
		})
		// Our own header checks report what the library would warn about.
		limalog.SetWarnFunc(nil)
	})
}

// maxCompressedCluster bounds the compressed bytes read for one cluster:
// a 2 MiB cluster plus the sector count's slack.
const maxCompressedCluster = 2<<20 + 512*1024

type inflater struct {
	in  []byte
	br  bytes.Reader
	fr  io.ReadCloser // flate, raw deflate as qemu writes it
	zd  *zstd.Decoder
	dec io.Reader
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

func newInflater(r io.Reader, isZstd bool) (io.ReadCloser, error) {
	z := inflaters.Get().(*inflater)
	z.in = z.in[:0]
	// r is a section of the image file: read it whole, with one bound.
	in, err := readAllBounded(r, z.in, maxCompressedCluster)
	z.in = in
	if err != nil {
		inflaters.Put(z)
		return nil, err
	}
	z.br.Reset(z.in)
	if isZstd {
		if z.zd == nil {
			z.zd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderLowmem(true))
			if err != nil {
				return nil, err
			}
		}
		if err := z.zd.Reset(&z.br); err != nil {
			inflaters.Put(z)
			return nil, err
		}
		z.dec = z.zd
	} else {
		if z.fr == nil {
			z.fr = flate.NewReader(&z.br)
		} else if err := z.fr.(flate.Resetter).Reset(&z.br, nil); err != nil {
			inflaters.Put(z)
			return nil, err
		}
		z.dec = z.fr
	}
	return z, nil
}

// Read fills p completely unless the stream ends first.
func (z *inflater) Read(p []byte) (int, error) {
	n, err := io.ReadFull(z.dec, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (z *inflater) Close() error {
	z.dec = nil
	if cap(z.in) > maxCompressedCluster {
		z.in = nil
	}
	inflaters.Put(z)
	return nil
}

func readAllBounded(r io.Reader, dst []byte, limit int) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			if len(dst) >= limit {
				return dst, nil
			}
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
