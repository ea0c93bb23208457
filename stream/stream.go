// Package stream runs the concurrent block pipeline: a producer walks the
// source's allocation map in fixed-size blocks, N workers read the blocks
// that may hold data, compare them with zeros and optionally transform them
// (compress), and a bounded reorder window hands every block, in order, to a
// Sink. Memory is bounded by Window x BlockSize (plus the transform's own
// buffers), whatever the size of the disk.
package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"vmimport/internal/bufpool"
	"vmimport/reader/image"
)

// Source is what the pipeline reads: an image.Image without Info and Close.
type Source interface {
	io.ReaderAt
	Size() int64
	Extent(off, n int64) (image.Extent, error)
}

// Block is one piece of the disk handed to the Sink.
type Block struct {
	Off int64 // virtual offset, a multiple of the block size
	Len int64 // bytes covered; zero runs may span many blocks
	// Zero is set when every byte of the block reads as zero; Data is nil.
	Zero bool
	// Data holds the Len bytes of a data block. It is reused once the
	// Sink returns.
	Data []byte
	// Aux is whatever Options.Transform produced (compressed clusters, ...),
	// reused once the Sink returns.
	Aux any

	seq int64
	err error
}

// Sink receives the blocks in order of Off, from one goroutine.
type Sink interface {
	WriteBlock(ctx context.Context, b *Block) error
}

// Transformer is implemented by sinks that want work done on every data
// block in the workers, in parallel, before the block reaches WriteBlock
// (zero-page marking, compression). Run picks it up from the sink itself,
// so no caller can forget it. Transform may set b.Aux; it must not keep b.

type Transformer interface {
	Transform() func(b *Block) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, b *Block) error

// WriteBlock calls f.
func (f SinkFunc) WriteBlock(ctx context.Context, b *Block) error { return f(ctx, b) }

// Options configure a Run. The zero value means the defaults.
type Options struct {
	// Workers read and transform blocks in parallel (default: GOMAXPROCS).
	Workers int
	// BlockSize is the unit of reading and zero detection (default 1 MiB;
	// a power of two from 4 KiB to 64 MiB).
	BlockSize int
	// Window is how many blocks may be in flight, read ahead of the one the
	// Sink waits for (default 2 x Workers + 2, at least Workers).
	Window int
	// MaxZeroRun bounds the length of one zero Block (default 1 GiB); sinks
	// that want to hear of the stream's progress more often lower it.
	MaxZeroRun int64
	// Progress, if set, is called by the sink goroutine after each block.
	Progress func(Stats)
	// Buffers lends the blocks' buffers (the process's pool, bounded by
	// its memory budget); nil: a pool of the window's size for this run.
	// Every block's buffer goes back once the Sink took it, or the run
	// ended.
	Buffers *bufpool.Pool
}

// Stats count what the pipeline did, in bytes.
type Stats struct {
	Size     int64 `json:"virtual_size"`
	Done     int64 `json:"done"`      // virtual bytes handed to the sink, in order
	Read     int64 `json:"read"`      // bytes read from the source
	Skipped  int64 `json:"skipped"`   // zero bytes known from the allocation map, never read
	Detected int64 `json:"detected"`  // zero bytes found by comparing data with zeros
	Data     int64 `json:"data"`      // bytes handed on as data
	Blocks   int64 `json:"blocks"`    // data blocks read
	ZeroRuns int64 `json:"zero_runs"` // zero blocks handed on
}

// ErrOptions is wrapped by every error about invalid options.
var ErrOptions = errors.New("stream: invalid options")

func (o Options) withDefaults() (Options, error) {
	if o.Workers == 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Workers < 1 || o.Workers > 256 {
		return o, fmt.Errorf("%w: workers %d outside 1..256", ErrOptions, o.Workers)
	}
	if o.BlockSize == 0 {
		o.BlockSize = 1 << 20
	}
	if o.BlockSize < 4<<10 || o.BlockSize > 64<<20 || o.BlockSize&(o.BlockSize-1) != 0 {
		return o, fmt.Errorf("%w: block size %d is not a power of two from 4 KiB to 64 MiB", ErrOptions, o.BlockSize)
	}
	if o.Window == 0 {
		o.Window = 2*o.Workers + 2
	}
	if o.Window < o.Workers || o.Window > 4096 {
		return o, fmt.Errorf("%w: window %d outside %d..4096", ErrOptions, o.Window, o.Workers)
	}
	if o.MaxZeroRun == 0 {
		o.MaxZeroRun = 1 << 30
	}
	if o.MaxZeroRun < int64(o.BlockSize) {
		o.MaxZeroRun = int64(o.BlockSize)
	}
	o.MaxZeroRun = o.MaxZeroRun / int64(o.BlockSize) * int64(o.BlockSize)
	return o, nil
}

// Run reads src once and hands every block to sink in order. It returns
// when the whole disk has been handed on, or at the first error, or when ctx
// is cancelled; every goroutine it started has ended by then.
func Run(ctx context.Context, src Source, sink Sink, opts Options) (Stats, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return Stats{}, err
	}
	p := &pipeline{
		src:   src,
		sink:  sink,
		o:     o,
		size:  src.Size(),
		zero:  make([]byte, o.BlockSize),
		jobs:  make(chan *Block, o.Window),
		done:  make(chan *Block, o.Window),
		slots: make(chan struct{}, o.Window),
		bufs:  o.Buffers,
		ring:  make([]*Block, o.Window),
	}
	if p.bufs == nil {
		p.bufs = bufpool.New(int64(o.Window) * int64(o.BlockSize))
	}
	if t, ok := sink.(Transformer); ok {
		p.transform = t.Transform()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.produce(gctx) })
	var workers sync.WaitGroup
	for range o.Workers {
		workers.Add(1)
		g.Go(func() error {
			defer workers.Done()
			return p.work(gctx)
		})
	}
	g.Go(func() error {
		workers.Wait()
		close(p.done)
		return nil
	})
	g.Go(func() error { return p.deliver(gctx) })
	err = g.Wait()
	p.giveBack()
	st := p.stats()
	if err == nil && st.Done != p.size {
		err = fmt.Errorf("stream: internal error: delivered %d of %d bytes", st.Done, p.size)
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, context.Cause(ctx)) {
		err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
	}
	return st, err
}

// giveBack returns the buffers of the blocks a failed run left in flight,
// once every goroutine of the run has ended.
func (p *pipeline) giveBack() {
	for b := range p.done {
		p.release(b)
	}
	for _, b := range p.ring {
		if b != nil {
			p.release(b)
		}
	}
}

// release gives a block's buffer back.
func (p *pipeline) release(b *Block) {
	if b.Data != nil {
		p.bufs.Put(b.Data[:cap(b.Data)])
		b.Data = nil
	}
}

type pipeline struct {
	src       Source
	sink      Sink
	transform func(b *Block) error // the sink's, run in the workers; may be nil
	o         Options
	size      int64
	zero      []byte

	jobs  chan *Block   // producer -> workers, in order
	done  chan *Block   // workers -> deliver, any order
	slots chan struct{} // one per block in flight: bounds the window
	ring  []*Block      // deliver's early arrivals, by seq

	bufs *bufpool.Pool // lends the blocks' buffers

	read, skipped, detected, data, delivered, blocks, zeroRuns atomic.Int64
}

func (p *pipeline) stats() Stats {
	return Stats{
		Size: p.size, Done: p.delivered.Load(), Read: p.read.Load(), Skipped: p.skipped.Load(),
		Detected: p.detected.Load(), Data: p.data.Load(), Blocks: p.blocks.Load(), ZeroRuns: p.zeroRuns.Load(),
	}
}

// produce walks the allocation map and emits blocks: zero runs (as long as
// the map says, up to MaxZeroRun) and data blocks to read.
func (p *pipeline) produce(ctx context.Context) error {
	defer close(p.jobs)
	bs := int64(p.o.BlockSize)
	var ext image.Extent // the last answer of src.Extent
	var seq int64
	for off := int64(0); off < p.size; {
		end := min(off+bs, p.size)
		// Is [off, end) wholly inside known zero runs? Then extend the run
		// block by block for as long as the map says zero.
		zeroEnd := off
		for zeroEnd < p.size && zeroEnd-off < p.o.MaxZeroRun {
			blockEnd := min(zeroEnd+bs, p.size)
			ok, err := p.zeroUpTo(&ext, zeroEnd, blockEnd)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			zeroEnd = blockEnd
		}
		b := &Block{Off: off, seq: seq}
		if zeroEnd > off {
			b.Zero, b.Len = true, zeroEnd-off
			p.skipped.Add(b.Len)
		} else {
			b.Len = end - off
		}
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case p.jobs <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
		seq++
		off += b.Len
	}
	return nil
}

// zeroUpTo reports whether the allocation map says [from, to) reads as zero,
// asking src.Extent as needed and keeping its last answer in ext.
func (p *pipeline) zeroUpTo(ext *image.Extent, from, to int64) (bool, error) {
	for from < to {
		if from < ext.Start || from >= ext.Start+ext.Length {
			e, err := p.src.Extent(from, p.size-from)
			if err != nil {
				return false, fmt.Errorf("allocation map at offset %d: %w", from, err)
			}
			if e.Length <= 0 || e.Start != from {
				return false, fmt.Errorf("allocation map at offset %d: bad answer [%d, +%d)", from, e.Start, e.Length)
			}
			*ext = e
		}
		if !ext.Zero {
			return false, nil
		}
		from = ext.Start + ext.Length
	}
	return true, nil
}

// work reads data blocks, detects zeros and runs the transform.
func (p *pipeline) work(ctx context.Context) error {
	for b := range p.jobs {
		if !b.Zero {
			p.fill(ctx, b)
		}
		select {
		case p.done <- b:
		case <-ctx.Done():
			p.release(b)
			return ctx.Err()
		}
		if b.err != nil {
			return b.err
		}
	}
	return nil
}

func (p *pipeline) fill(ctx context.Context, b *Block) {
	whole, err := p.bufs.Get(ctx, p.o.BlockSize)
	if err != nil {
		b.err = err
		return
	}
	buf := whole[:b.Len]
	n, err := p.src.ReadAt(buf, b.Off)
	if n == len(buf) {
		err = nil
	} else if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		p.bufs.Put(whole)
		b.err = fmt.Errorf("reading %d bytes at offset %d: %w", b.Len, b.Off, err)
		return
	}
	p.read.Add(b.Len)
	if bytes.Equal(buf, p.zero[:len(buf)]) {
		p.bufs.Put(whole)
		b.Zero = true
		p.detected.Add(b.Len)
		return
	}
	b.Data = buf
	if p.transform != nil {
		if err := p.transform(b); err != nil {
			b.err = fmt.Errorf("block at offset %d: %w", b.Off, err)
		}
	}
}

// deliver hands blocks to the sink in order, holding early arrivals in a
// ring as large as the window.
func (p *pipeline) deliver(ctx context.Context) error {
	ring := p.ring
	var next int64
	for b := range p.done {
		if b.err != nil {
			p.release(b)
			return b.err
		}
		ring[b.seq%int64(len(ring))] = b
		for {
			i := next % int64(len(ring))
			cur := ring[i]
			if cur == nil || cur.seq != next {
				break
			}
			ring[i] = nil
			err := p.hand(ctx, cur)
			p.release(cur)
			if err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

func (p *pipeline) hand(ctx context.Context, b *Block) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := p.sink.WriteBlock(ctx, b); err != nil {
		return err
	}
	if b.Zero {
		p.zeroRuns.Add(1)
	} else {
		p.data.Add(b.Len)
		p.blocks.Add(1)
	}
	p.delivered.Add(b.Len)
	<-p.slots
	if p.o.Progress != nil {
		p.o.Progress(p.stats())
	}
	return nil
}
