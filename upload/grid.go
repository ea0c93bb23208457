package upload

import (
	"context"
	"fmt"

	"vmimport/internal/bufpool"
)

// grid cuts the output into parts as it is written: part 1 of first bytes,
// held until Commit (its head is patched in last), then parts of size
// bytes, each sent once filled, from buffers of the pool. Part 1 is small
// (headPartSize) so that holding it all along costs little whatever the
// part size: S3 does not ask parts to be of one size, only every part but
// the last to be at least 5 MiB. Only the goroutine calling Write, Skip,
// Commit and Abort uses it. Every buffer is borrowed from the process's
// pool (bufpool) and given back: a part's by the sender once the part is
// in the store, part 1's after it is sent last, the one being filled by
// Abort.
type grid struct {
	size     int64  // part size
	first    int64  // size of part 1: headPart(size), or size for an upload recorded before
	hint     int64  // the size hint the grid was planned for
	pos      int64  // bytes of output so far
	cur      []byte // buffer of the part being filled; nil while it is all zeros
	fill     int64  // bytes of the current part so far
	head     []byte // part 1, held until Commit
	headLen  int64
	headSeen bool
	pool     *pool
}

// partNum is the number of the part being filled.
func (g *grid) partNum() int64 { return g.partAt(g.pos - g.fill) }

// partAt is the number of the part holding byte off.
func (g *grid) partAt(off int64) int64 {
	if off < g.first {
		return 1
	}
	return (off-g.first)/g.size + 2
}

// partStart is the offset of part num in the object.
func (g *grid) partStart(num int32) int64 {
	if num <= 1 {
		return 0
	}
	return g.first + int64(num-2)*g.size
}

// partLen is the full length of part num (the last may be shorter).
func (g *grid) partLen(num int64) int64 {
	if num == 1 {
		return g.first
	}
	return g.size
}

// numParts is the number of parts of the output so far.
func (g *grid) numParts() int32 { return gridParts(g.pos, g.first, g.size) }

// gridParts is the number of parts of an object of n bytes cut into a first
// part of first bytes and then parts of size bytes.
func gridParts(n, first, size int64) int32 {
	if n <= first {
		return 1
	}
	return int32(1 + (n-first+size-1)/size)
}

// buffer returns a buffer for the part being filled: part 1's is apart
// (it is held until Commit), the others count against the parts the
// upload may hold.
func (g *grid) buffer() ([]byte, error) {
	if g.partNum() == 1 {
		return g.pool.getHead(int(g.first))
	}
	return g.pool.get()
}

// take ends the part being filled and returns its number and bytes (nil
// for a part of zeros).
func (g *grid) take() (num int64, b []byte, n int64) {
	num, b, n = g.partNum(), g.cur, g.fill
	g.cur, g.fill = nil, 0
	return num, b, n
}

func (g *grid) tooBig() error {
	return fmt.Errorf("upload: the output passed %d parts of %d MiB (planned for at most %d MiB): the size hint was too small", MaxParts, g.size>>20, g.hint>>20)
}

// write appends p, calling end for each part it fills.
func (g *grid) write(p []byte, end func() error) (int, error) {
	n := 0
	for len(p) > 0 {
		if g.partNum() > MaxParts {
			return n, g.tooBig()
		}
		if g.cur == nil {
			b, err := g.buffer()
			if err != nil {
				return n, err
			}
			clear(b[:g.fill])
			g.cur = b
		}
		limit := g.partLen(g.partNum())
		k := copy(g.cur[g.fill:limit], p)
		g.fill += int64(k)
		g.pos += int64(k)
		p = p[k:]
		n += k
		if g.fill == limit {
			if err := end(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// skip appends n zero bytes, calling end for each part it fills.
func (g *grid) skip(n int64, end func() error) error {
	for n > 0 {
		if g.partNum() > MaxParts {
			return g.tooBig()
		}
		limit := g.partLen(g.partNum())
		k := min(n, limit-g.fill)
		if g.cur != nil {
			clear(g.cur[g.fill : g.fill+k])
		}
		g.fill += k
		g.pos += k
		n -= k
		if g.fill == limit {
			if err := end(); err != nil {
				return err
			}
		}
	}
	return nil
}

// giveBack gives back the buffers the grid holds: the part being filled
// and part 1, when the upload is aborted before they went to a sender.
func (g *grid) giveBack() {
	if g.cur != nil {
		if g.partNum() == 1 {
			g.pool.putHead(g.cur)
		} else {
			g.pool.put(g.cur)
		}
	}
	if g.head != nil {
		g.pool.putHead(g.head)
	}
	g.cur, g.head = nil, nil
}

// pool lends the part buffers of one upload from the process's pool: at
// most n at once (the parts in flight and the one being filled), and part
// 1's apart; a part waits for a sender to give one back.
type pool struct {
	size   int64
	quota  chan struct{}
	bufs   *bufpool.Pool
	ctx    context.Context // ends when the senders fail
	failed func() error
}

func newPool(size int64, n int, bufs *bufpool.Pool) *pool {
	return &pool{size: size, quota: make(chan struct{}, n), bufs: bufs}
}

// get borrows a part's buffer.
func (p *pool) get() ([]byte, error) {
	select {
	case p.quota <- struct{}{}:
	case <-p.ctx.Done():
		return nil, p.failed()
	}
	b, err := p.bufs.Get(p.ctx, int(p.size))
	if err != nil {
		<-p.quota
		if ferr := p.failed(); ferr != nil {
			return nil, ferr
		}
		return nil, err
	}
	return b, nil
}

// put gives a part's buffer back.
func (p *pool) put(b []byte) {
	p.bufs.Put(b)
	<-p.quota
}

// getHead borrows part 1's buffer, zeroed (a head shorter than part 1
// leaves zeros after it).
func (p *pool) getHead(n int) ([]byte, error) {
	b, err := p.bufs.Get(p.ctx, n)
	if err == nil {
		clear(b)
	}
	return b, err
}

// putHead gives part 1's buffer back.
func (p *pool) putHead(b []byte) { p.bufs.Put(b) }
