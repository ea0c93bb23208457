// Package writer turns the ordered block stream into an output image (RAW
// here, QCOW2 in writer/qcow2) and lands it on a Target: a local file,
// stdout, or (package upload) an S3 multipart upload.
package writer

import (
	"bytes"
	"context"

	"vmimport/stream"
)

// Target receives the bytes of one output image, front to back.
//
// Write and Skip append; nothing is visible under the final name until
// Commit succeeds; Abort leaves nothing behind. A Target is used from one
// goroutine.
type Target interface {
	// Write appends p.
	Write(p []byte) (int, error)
	// Skip appends n zero bytes. Targets that can leave a hole (a sparse
	// file, a server-side copy of zeros) do so.
	Skip(n int64) error
	// Commit finishes the image. If head is not empty it replaces the first
	// len(head) bytes, which were written or skipped before; this is how a
	// QCOW2 header, known only at the end, lands at offset 0. Then the
	// output is made durable and appears under its final name.
	Commit(ctx context.Context, head []byte) error
	// Abort discards the output; nothing remains under the final name.
	Abort(ctx context.Context) error
}

// Encoder lays out an output format over a Target: it receives the ordered
// blocks (it is a stream.Sink) and, after the last, writes what follows the
// data and commits the Target.
type Encoder interface {
	stream.Sink
	// Every encoder is a stream.Transformer: stream.Run runs Transform on
	// data blocks in its workers (zero pages, compression), in parallel.
	stream.Transformer
	// Finish writes the trailing structures and commits the target.
	Finish(ctx context.Context) error
	// Written is the number of bytes of output so far.
	Written() int64
}

// Raw writes the disk as it is: data as bytes, zero runs as holes. Inside a
// data block, 4 KiB pages of zeros are found in the stream's workers and
// skipped too, as qemu-img does with its default -S 4k: the output is as
// sparse as qemu-img's and no zero page is written (or sent).
type Raw struct {
	t Target
	n int64
}

var _ Encoder = (*Raw)(nil)

// NewRaw returns a RAW encoder on t.
func NewRaw(t Target) *Raw { return &Raw{t: t} }

// ZeroPage is the unit of zero detection inside data blocks.
const ZeroPage = 4096

// zeroPages marks the all-zero pages of a data block: bit i of word i/64
// for page i. It is nil when the block has none.
type zeroPages []uint64

var zeroPage [ZeroPage]byte

// WriteBlock appends a block.
func (r *Raw) WriteBlock(_ context.Context, b *stream.Block) error {
	r.n += b.Len
	if b.Zero {
		return r.t.Skip(b.Len)
	}
	zp, _ := b.Aux.(zeroPages)
	if zp == nil {
		_, err := r.t.Write(b.Data)
		return err
	}
	// Runs of data pages are written, runs of zero pages skipped.
	pages := (len(b.Data) + ZeroPage - 1) / ZeroPage
	for i := 0; i < pages; {
		zero := zp[i/64]&(1<<(i%64)) != 0
		j := i + 1
		for j < pages && (zp[j/64]&(1<<(j%64)) != 0) == zero {
			j++
		}
		lo, hi := i*ZeroPage, min(j*ZeroPage, len(b.Data))
		var err error
		if zero {
			err = r.t.Skip(int64(hi - lo))
		} else {
			_, err = r.t.Write(b.Data[lo:hi])
		}
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

// Transform finds the zero pages of a data block, in the workers.
func (r *Raw) Transform() func(b *stream.Block) error { return markZeroPages }

func markZeroPages(b *stream.Block) error {
	var zp zeroPages
	for off := 0; off < len(b.Data); off += ZeroPage {
		page := b.Data[off:min(off+ZeroPage, len(b.Data))]
		if bytes.Equal(page, zeroPage[:len(page)]) {
			if zp == nil {
				zp = make(zeroPages, (len(b.Data)/ZeroPage+64)/64)
			}
			i := off / ZeroPage
			zp[i/64] |= 1 << (i % 64)
		}
	}
	if zp != nil {
		b.Aux = zp
	}
	return nil
}

// Finish commits the target; RAW has no head to patch.
func (r *Raw) Finish(ctx context.Context) error { return r.t.Commit(ctx, nil) }

// Written is the output size so far.
func (r *Raw) Written() int64 { return r.n }
