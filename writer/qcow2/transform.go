package qcow2

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"

	"vmimport/stream"
)

// Cluster kinds in a block.
const (
	kindZero       = 0
	kindPlain      = 1
	kindCompressed = 2
)

// blockInfo is what the workers work out for one data block: per cluster,
// whether it is zero, stored plain or compressed (and its compressed bytes).
// The encoder puts it back in its pool once the block is written.
type blockInfo struct {
	kinds []byte
	start []int32 // compressed bytes of cluster i: comp[start[i]:start[i+1]]
	comp  []byte
	last  []byte // the last, partial cluster of the disk padded with zeros
}

var infoPool = sync.Pool{New: func() any { return new(blockInfo) }}

// zlibWindow is the deflate window qemu inflates with (windowBits -12):
// back-references further than 4 KiB would not read back in qemu.
const zlibWindow = 4096

type deflater struct {
	w   *flate.Writer
	out appendWriter
}

type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) { a.b = append(a.b, p...); return len(p), nil }

var deflaters = sync.Pool{New: func() any {
	d := new(deflater)
	w, err := flate.NewWriterWindow(&d.out, zlibWindow)
	if err != nil {
		panic(err) // a constant, valid window size
	}
	d.w = w
	return d
}}

var zstdEncoders = sync.Pool{New: func() any {
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false),
		zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		panic(err) // constant, valid options
	}
	return e
}}

// transform runs in the stream's workers: zero detection per cluster and,
// with compression on, compression of every data cluster. Clusters whose
// compressed form is not smaller than a cluster are stored plain.
func (e *Encoder) transform(b *stream.Block) error {
	if b.Zero {
		return nil
	}
	if err := e.checkBlock(b); err != nil {
		return err
	}
	cs := e.g.cs
	n := int(ceilDiv(b.Len, cs))
	info := infoPool.Get().(*blockInfo)
	info.kinds = grow(info.kinds, n)
	info.start = grow(info.start, n+1)
	info.comp = info.comp[:0]
	compress := e.o.Compression != CompressNone && (e.o.Choose == nil || e.o.Choose(b.Off))
	var def *deflater
	var zenc *zstd.Encoder
	defer func() {
		if def != nil {
			deflaters.Put(def)
		}
		if zenc != nil {
			zstdEncoders.Put(zenc)
		}
	}()
	for i := range n {
		info.start[i] = int32(len(info.comp))
		lo := int64(i) * cs
		c := b.Data[lo:min(lo+cs, b.Len)]
		if bytes.Equal(c, e.zero[:len(c)]) {
			info.kinds[i] = kindZero
			continue
		}
		info.kinds[i] = kindPlain
		if !compress {
			continue
		}
		if int64(len(c)) < cs {
			// The last cluster of a disk whose size is not a multiple of
			// the cluster size: compress it padded with zeros, as qemu does.
			info.last = append(grow(info.last, 0), c...)
			info.last = append(info.last, e.zero[:cs-int64(len(c))]...)
			c = info.last
		}
		before := len(info.comp)
		switch e.o.Compression {
		case CompressZlib:
			if def == nil {
				def = deflaters.Get().(*deflater)
			}
			def.out.b = info.comp
			def.w.Reset(&def.out)
			if _, err := def.w.Write(c); err != nil {
				return fmt.Errorf("deflate: %w", err)
			}
			if err := def.w.Close(); err != nil {
				return fmt.Errorf("deflate: %w", err)
			}
			info.comp = def.out.b
			def.out.b = nil
		case CompressZstd:
			if zenc == nil {
				zenc = zstdEncoders.Get().(*zstd.Encoder)
			}
			info.comp = zenc.EncodeAll(c, info.comp)
		}
		if int64(len(info.comp)-before) >= cs {
			info.comp = info.comp[:before] // does not shrink: store it plain
			continue
		}
		info.kinds[i] = kindCompressed
	}
	info.start[n] = int32(len(info.comp))
	b.Aux = info
	return nil
}

// checkBlock enforces what the layout needs from the stream: data blocks
// of whole clusters, inside the virtual size.
func (e *Encoder) checkBlock(b *stream.Block) error {
	if b.Off%e.g.cs != 0 || (b.Len%e.g.cs != 0 && b.Off+b.Len != e.o.VirtualSize) {
		return fmt.Errorf("qcow2: block [%d, +%d) is not made of whole %d-byte clusters: the stream's block size must be at least the cluster size (see qcow2.BlockSize)",
			b.Off, b.Len, e.g.cs)
	}
	if b.Off+b.Len > e.o.VirtualSize || b.Len <= 0 {
		return fmt.Errorf("qcow2: block [%d, +%d) is outside the virtual size %d", b.Off, b.Len, e.o.VirtualSize)
	}
	if !b.Zero && int64(len(b.Data)) != b.Len {
		return fmt.Errorf("qcow2: block at %d has %d bytes of data for a length of %d", b.Off, len(b.Data), b.Len)
	}
	return nil
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
