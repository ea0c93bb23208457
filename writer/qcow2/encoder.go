package qcow2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"vmimport/stream"
	"vmimport/writer"
)

const (
	flagCopied     = uint64(1) << 63 // L1/L2: refcount is exactly one
	flagCompressed = uint64(1) << 62 // L2: compressed cluster descriptor

	incompatCompressionType = uint64(1) << 3
	compressionTypeZstd     = 1

	headerV2Len = 72
	headerV3Len = 112 // up to compression_type (byte 104), padded to 8

	// queueBytes bounds the whole clusters (data or tables) held in memory
	// behind a compressed cluster that is still being filled; past it the
	// compressed cluster goes out with its free tail as padding.
	queueBytes = 4 << 20
	// bufSize is the write buffer in front of the Target: compressed
	// clusters and small clusters would otherwise be many small writes.
	bufSize = 1 << 20
)

// Encoder lays out a QCOW2 image over a writer.Target as the ordered blocks
// come. Use it as the stream's Sink with Transform() as the stream's
// Transform, then call Finish.
type Encoder struct {
	t    writer.Target
	o    Options
	g    geometry
	zero []byte // one cluster of zeros, read only

	started  bool
	finished bool
	err      error // sticky: once a write failed, every call fails

	// The output is laid out in whole clusters up to pos. While a
	// compressed cluster is open (cbuf != nil) it sits at cPos, filled up
	// to cFill, and the whole clusters laid out after it wait in queue;
	// everything before cPos has been written. With no open compressed
	// cluster everything up to pos has been written.
	pos     int64
	cbuf    []byte
	cPos    int64
	cFill   int64
	queue   [][]byte
	qMax    int
	written int64  // bytes handed on (buffered included)
	buf     []byte // output not yet handed to the Target
	next    int64  // virtual offset the next block must start at

	l1     []uint64 // the L1 table, in memory to the end
	l2Idx  int64    // index of the L2 table being filled, -1 if none
	l2     []uint64
	l2Used bool

	stats CompressionStats

	rt      []uint64  // refcount table: offsets of the refcount blocks written
	open    []*rblock // refcount blocks still counting, by index
	pending []table   // tables to lay out
	free    [][]byte  // cluster buffers for tables and the queue
	spare   []*rblock // refcount block buffers for reuse
}

type rblock struct {
	idx    int64
	counts []uint16
}

// table is a metadata cluster waiting to be written: an L2 table (index
// into the L1 table) or a refcount block (index into the refcount table).
type table struct {
	l2   bool
	idx  int64
	data []byte
}

var _ writer.Encoder = (*Encoder)(nil)

// NewEncoder returns an encoder writing a QCOW2 image with options o to t.
// A *writer.Stream (stdout) target is refused with an error wrapping
// writer.ErrHeadOnStream: the header comes last.
func NewEncoder(t writer.Target, o Options) (*Encoder, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, ok := t.(*writer.Stream); ok {
		return nil, fmt.Errorf("qcow2 output: %w", writer.ErrHeadOnStream)
	}
	g := o.geometry()
	e := &Encoder{
		t:     t,
		o:     o,
		g:     g,
		zero:  make([]byte, g.cs),
		l1:    make([]uint64, g.l1Size),
		l2Idx: -1,
		l2:    make([]uint64, g.l2Entries),
		buf:   make([]byte, 0, max(bufSize, int(g.cs))),
		qMax:  int(max(1, queueBytes/g.cs)),
	}
	return e, nil
}

// Transform returns the function the stream's workers run on every data
// block: per-cluster zero detection and compression.
func (e *Encoder) Transform() func(b *stream.Block) error { return e.transform }

// CompressionStats count the data clusters of an image by how they are
// stored.
type CompressionStats struct {
	Plain      int64 `json:"plain_clusters"`
	Compressed int64 `json:"compressed_clusters"`
	// In and Out are the bytes of the compressed clusters before and after
	// compression.
	In  int64 `json:"compressed_in_bytes"`
	Out int64 `json:"compressed_out_bytes"`
}

// Ratio is In/Out of the compressed clusters (0 when none).
func (s CompressionStats) Ratio() float64 {
	if s.Out == 0 {
		return 0
	}
	return float64(s.In) / float64(s.Out)
}

// Compression counts the data clusters written so far, plain and
// compressed. Call it from the goroutine that writes the blocks.
func (e *Encoder) Compression() CompressionStats { return e.stats }

// Next is the virtual offset the stream has been laid out to: every block
// before it was written. Call it from the goroutine that writes the blocks.
func (e *Encoder) Next() int64 { return e.next }

// Written is the number of bytes of output so far.
func (e *Encoder) Written() int64 { return e.written }

// WriteBlock appends one block of the ordered stream.
func (e *Encoder) WriteBlock(_ context.Context, b *stream.Block) error {
	if e.err != nil {
		return e.err
	}
	if e.finished {
		return errors.New("qcow2: block after Finish")
	}
	if b.Off != e.next {
		return fmt.Errorf("qcow2: block at %d, expected one at %d", b.Off, e.next)
	}
	if err := e.checkBlock(b); err != nil {
		return err
	}
	if err := e.start(); err != nil {
		return err
	}
	e.next = b.Off + b.Len
	if b.Zero {
		// Unallocated clusters read as zeros: nothing to write. Close
		// the L2 table if the run reaches the end of its range.
		if e.l2Idx >= 0 && e.next >= (e.l2Idx+1)*e.g.l2Entries*e.g.cs {
			e.closeL2()
		}
		return e.settle()
	}
	info, ok := b.Aux.(*blockInfo)
	if !ok {
		// The stream ran without our Transform: do its work here.
		if err := e.transform(b); err != nil {
			return err
		}
		info = b.Aux.(*blockInfo)
	}
	b.Aux = nil
	defer infoPool.Put(info)
	cs := e.g.cs
	vc := b.Off / cs
	for i, kind := range info.kinds {
		if kind == kindZero {
			continue
		}
		e.useL2(vc + int64(i))
		var entry uint64
		switch kind {
		case kindPlain:
			lo := int64(i) * cs
			off := e.putWhole(b.Data[lo:min(lo+cs, b.Len)])
			entry = uint64(off) | flagCopied
			e.stats.Plain++
		case kindCompressed:
			c := info.comp[info.start[i]:info.start[i+1]]
			off, err := e.putCompressed(c)
			if err != nil {
				return e.fail(err)
			}
			e.stats.Compressed++
			e.stats.In += cs
			e.stats.Out += int64(len(c))
			x := 62 - (e.g.cbits - 8)
			sectors := uint64((off+int64(len(c))-1)>>9 - off>>9)
			entry = flagCompressed | sectors<<x | uint64(off)
		}
		if err := e.settle(); err != nil {
			return err
		}
		e.l2[(vc+int64(i))%e.g.l2Entries] = entry
		e.l2Used = true
	}
	if e.next == e.o.VirtualSize || e.next%(e.g.l2Entries*cs) == 0 {
		e.closeL2()
	}
	return e.settle()
}

func (e *Encoder) fail(err error) error {
	if e.err == nil {
		e.err = err
	}
	return e.err
}

// start reserves the header cluster.
func (e *Encoder) start() error {
	if e.started {
		return nil
	}
	e.started = true
	if err := e.t.Skip(e.g.cs); err != nil {
		return e.fail(err)
	}
	e.pos, e.written = e.g.cs, e.g.cs
	e.ref(0)
	return nil
}

// useL2 makes the L2 table of virtual cluster vc the current one.
func (e *Encoder) useL2(vc int64) {
	j := vc / e.g.l2Entries
	if j == e.l2Idx {
		return
	}
	e.closeL2()
	e.l2Idx = j
}

// closeL2 queues the current L2 table if it maps anything.
func (e *Encoder) closeL2() {
	if e.l2Idx < 0 {
		return
	}
	if e.l2Used {
		data := e.cluster()
		for i, v := range e.l2 {
			binary.BigEndian.PutUint64(data[i*8:], v)
		}
		e.pending = append(e.pending, table{l2: true, idx: e.l2Idx, data: data})
		clear(e.l2)
		e.l2Used = false
	}
	e.l2Idx = -1
}

// cluster returns a cluster-sized buffer for a table.
func (e *Encoder) cluster() []byte {
	if n := len(e.free); n > 0 {
		c := e.free[n-1]
		e.free = e.free[:n-1]
		return c
	}
	return make([]byte, e.g.cs)
}

// putWhole lays out a whole cluster (a data cluster, padded with zeros if
// it is the short last one, or a table) at the end and returns its offset.
// Behind an open compressed cluster it waits in the queue.
func (e *Encoder) putWhole(p []byte) int64 {
	cs := e.g.cs
	off := e.pos
	e.pos += cs
	e.ref(off / cs)
	if e.cbuf == nil {
		e.write(p)
		e.write(e.zero[:cs-int64(len(p))])
		return off
	}
	q := e.cluster()
	copy(q, p)
	clear(q[len(p):])
	e.queue = append(e.queue, q)
	if len(e.queue) >= e.qMax {
		e.closeCompressed()
	}
	return off
}

// putCompressed packs compressed bytes right after the previous ones, as
// qemu does, into the open compressed cluster; they run on into the next
// host cluster when that one is contiguous (nothing queued), else a new
// compressed cluster is opened after the queue. Each host cluster holding a
// part of them counts one reference.
func (e *Encoder) putCompressed(c []byte) (int64, error) {
	cs := e.g.cs
	n := int64(len(c))
	if e.cbuf != nil && (e.cFill+n > cs && len(e.queue) > 0 || e.refcount(e.cPos/cs) >= maxRefcount) {
		e.closeCompressed()
	}
	if e.cbuf == nil {
		e.openCompressed()
	}
	off := e.cPos + e.cFill
	if x := 62 - (e.g.cbits - 8); off+n > 1<<x {
		return 0, fmt.Errorf("qcow2: compressed data at offset %d is beyond what a %d-byte cluster descriptor can address", off, cs)
	}
	k := min(n, cs-e.cFill)
	copy(e.cbuf[e.cFill:], c[:k])
	e.cFill += k
	e.ref(e.cPos / cs)
	if e.cFill == cs {
		e.closeCompressed()
	}
	if k < n {
		// The rest goes at the start of the next cluster, contiguous
		// since nothing was queued.
		e.openCompressed()
		copy(e.cbuf, c[k:])
		e.cFill = n - k
		e.ref(e.cPos / cs)
	}
	return off, nil
}

func (e *Encoder) openCompressed() {
	e.cbuf = e.cluster()
	e.cPos = e.pos
	e.cFill = 0
	e.pos += e.g.cs
}

// closeCompressed writes the open compressed cluster, its free tail as
// zeros, and the clusters queued behind it.
func (e *Encoder) closeCompressed() {
	if e.cbuf == nil {
		return
	}
	clear(e.cbuf[e.cFill:])
	e.write(e.cbuf)
	e.free = append(e.free, e.cbuf)
	e.cbuf = nil
	for _, q := range e.queue {
		e.write(q)
		e.free = append(e.free, q)
	}
	clear(e.queue)
	e.queue = e.queue[:0]
}

// write appends to the output through the buffer.
func (e *Encoder) write(p []byte) {
	e.written += int64(len(p))
	if len(e.buf)+len(p) > cap(e.buf) {
		e.flushBuf()
		if len(p) >= cap(e.buf) {
			if e.err == nil {
				if _, err := e.t.Write(p); err != nil {
					e.err = err
				}
			}
			return
		}
	}
	e.buf = append(e.buf, p...)
}

func (e *Encoder) flushBuf() {
	if len(e.buf) > 0 && e.err == nil {
		if _, err := e.t.Write(e.buf); err != nil {
			e.err = err
		}
	}
	e.buf = e.buf[:0]
}

// settle lays out the tables that are ready: closed L2 tables, and the
// refcount blocks whose clusters all lie before the open compressed cluster
// (or the end): no later write can add a reference to them. Laying out a
// table takes a cluster, which may complete another refcount block.
func (e *Encoder) settle() error {
	for {
		done := e.pos / e.g.cs // clusters below are final
		if e.cbuf != nil {
			done = e.cPos / e.g.cs
		}
		for len(e.open) > 0 && (e.open[0].idx+1)*e.g.rbEntries <= done {
			rb := e.open[0]
			e.open = e.open[1:]
			e.pending = append(e.pending, table{idx: rb.idx, data: e.encodeRefblock(rb)})
		}
		if len(e.pending) == 0 {
			break
		}
		tb := e.pending[0]
		e.pending = e.pending[1:]
		off := e.putWhole(tb.data)
		if tb.l2 {
			e.l1[tb.idx] = uint64(off) | flagCopied
		} else {
			e.setRT(tb.idx, off)
		}
		e.free = append(e.free, tb.data)
	}
	e.pending = e.pending[:0:cap(e.pending)]
	return e.err
}
