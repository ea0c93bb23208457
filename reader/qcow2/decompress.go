package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"

	"vmimport/reader/image"
)

// Compressed clusters. An L2 entry with bit 62 set holds, above bit
// 62-(cluster_bits-8), the count of 512-byte sectors the compressed bytes
// take after the first, and below it their file offset, which need not be
// aligned: the bytes run from the offset to the end of the last sector
// (qemu's qcow2_parse_compressed_l2_entry). They inflate, as raw deflate
// or as a zstd frame (compression_type), to one cluster; qemu refuses a
// cluster whose data ends before the cluster is full with EIO, and we
// refuse a read that asks for bytes past the end of the data.
//
// Each read of a compressed cluster costs one pread of its bytes and a
// Reset of a pooled decoder; a read that starts inside the cluster
// inflates the bytes before it and drops them, and stops at its own end.

// compressed returns the file offset and length of the bytes of the
// compressed cluster with L2 entry e.
func (im *Image) compressed(e uint64) (int64, int64) {
	shift := 62 - (im.h.ClusterBits - 8)
	o := int64(e & (1<<shift - 1))
	sectors := int64((e>>shift)&(1<<(im.h.ClusterBits-8)-1)) + 1
	return o, sectors*512 - o%512
}

// readCompressed fills buf with the guest bytes at pos, which lie in one
// compressed cluster with L2 entry e.
func (im *Image) readCompressed(buf []byte, pos int64, e uint64) error {
	host, n := im.compressed(e)
	// checkTables found the bytes inside the file rounded up to a sector;
	// the slack past the end of the file reads as zeros, as in qemu.
	z := inflaters.Get().(*inflater)
	defer z.put()
	z.in = grow(z.in, int(n))
	k, err := im.src.R.ReadAt(z.in[:min(n, im.src.Size-host)], host)
	if int64(k) < min(n, im.src.Size-host) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF // the file shrank since it was opened
		}
		return fmt.Errorf("%s: qcow2: reading guest offset %d (compressed cluster of %d bytes at file offset %d): %w", im.src.Path, pos, n, host, err)
	}
	clear(z.in[k:])
	dec, err := z.reset(im.h.CompressionType == 1)
	if err == nil {
		if skip := pos % im.cluster; skip > 0 {
			_, err = io.CopyN(io.Discard, dec, skip)
		}
	}
	if err == nil {
		_, err = io.ReadFull(dec, buf)
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("the data ends before the cluster does")
		}
		return image.Corruptf(im.src.Path, "qcow2", host, "reading guest offset %d: compressed cluster of %d bytes does not inflate: %v", pos, n, err)
	}
	return nil
}

// inflater is a pooled buffer of compressed bytes and the decoders that
// read it.
type inflater struct {
	in []byte
	br bytes.Reader
	fr io.ReadCloser // raw deflate, as qemu writes it
	zd *zstd.Decoder
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

// maxPooledInput is the largest input buffer an inflater keeps: the
// bytes of one 2 MiB cluster and some slack; larger inputs (a 2 MiB
// cluster that did not shrink) are let go after use.
const maxPooledInput = 2<<20 + 64<<10

func (z *inflater) reset(isZstd bool) (io.Reader, error) {
	z.br.Reset(z.in)
	if isZstd {
		if z.zd == nil {
			zd, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderLowmem(true))
			if err != nil {
				return nil, err
			}
			z.zd = zd
		}
		return z.zd, z.zd.Reset(&z.br)
	}
	if z.fr == nil {
		z.fr = flate.NewReader(&z.br)
		return z.fr, nil
	}
	return z.fr, z.fr.(flate.Resetter).Reset(&z.br, nil)
}

func (z *inflater) put() {
	if cap(z.in) > maxPooledInput {
		z.in = nil
	}
	inflaters.Put(z)
}

// grow returns b with length n, reusing its storage when large enough.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
