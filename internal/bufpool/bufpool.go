// Package bufpool is the one allocator of the large buffers of a process
// (the blocks of the pass, the parts of an upload), as rclone's lib/pool:
// bounded (the --memory budget), a buffer given back is lent again to the
// next borrower of its size, and buffers nobody borrowed for a while are
// let go. Every buffer has one owner at a time: the pool, or the borrower
// until it gives the buffer back; nothing else keeps one (no sync.Pool,
// whose registry would keep its owner alive).
package bufpool

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// DefaultIdle is how long a buffer given back is kept for the next
// borrower of its size.
const DefaultIdle = 5 * time.Second

// Pool lends buffers, at most Limit bytes of them at once.
type Pool struct {
	limit int64
	idle  time.Duration
	// OnNew, if set, hears every buffer the pool makes (tests follow them
	// with weak pointers). Set it before the first Get.
	OnNew func(b []byte)

	mu    sync.Mutex
	lent  int64 // bytes lent and not given back
	peak  int64
	free  map[int][]freeBuf // by size, the last given back last
	kept  int64             // bytes in free
	wake  chan struct{}     // closed when a buffer comes back
	timer *time.Timer
}

type freeBuf struct {
	b    []byte
	back time.Time
}

// New returns a pool that lends at most limit bytes at once.
func New(limit int64) *Pool {
	return &Pool{limit: limit, idle: DefaultIdle, free: map[int][]freeBuf{}, wake: make(chan struct{})}
}

// Limit is the most the pool lends at once.
func (p *Pool) Limit() int64 { return p.limit }

// Get lends a buffer of n bytes (its contents are not cleared), waiting
// while lending it would pass the limit, until ctx ends.
func (p *Pool) Get(ctx context.Context, n int) ([]byte, error) {
	if int64(n) > p.limit {
		return nil, fmt.Errorf("a buffer of %d bytes does not fit in the memory budget of %d", n, p.limit)
	}
	p.mu.Lock()
	for {
		if list := p.free[n]; len(list) > 0 {
			b := list[len(list)-1].b
			list[len(list)-1] = freeBuf{}
			p.free[n] = list[:len(list)-1]
			p.kept -= int64(n)
			p.lend(n)
			p.mu.Unlock()
			return b[:n], nil
		}
		if p.lent+int64(n) <= p.limit {
			// Buffers of other sizes kept for later make room first:
			// lent and kept stay within the limit.
			p.dropFor(int64(n))
			p.lend(n)
			p.mu.Unlock()
			b := make([]byte, n)
			if p.OnNew != nil {
				p.OnNew(b)
			}
			return b, nil
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		p.mu.Lock()
	}
}

func (p *Pool) lend(n int) {
	p.lent += int64(n)
	p.peak = max(p.peak, p.lent)
}

// dropFor lets go of kept buffers, oldest first, until n more bytes fit
// beside the lent and the kept ones.
func (p *Pool) dropFor(n int64) {
	for p.kept > 0 && p.lent+p.kept+n > p.limit {
		var oldest int
		var at time.Time
		for size, list := range p.free {
			if len(list) > 0 && (at.IsZero() || list[0].back.Before(at)) {
				oldest, at = size, list[0].back
			}
		}
		list := p.free[oldest]
		list[0] = freeBuf{}
		p.free[oldest] = list[1:]
		p.kept -= int64(oldest)
	}
}

// Put gives b back: it must be a buffer Get lent, not used after.
func (p *Pool) Put(b []byte) {
	if b == nil {
		return
	}
	n := cap(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lent -= int64(n)
	p.free[n] = append(p.free[n], freeBuf{b: b[:n], back: time.Now()})
	p.kept += int64(n)
	close(p.wake)
	p.wake = make(chan struct{})
	if p.timer == nil {
		p.timer = time.AfterFunc(p.idle, p.expire)
	}
}

// expire lets go of the buffers kept longer than idle.
func (p *Pool) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = nil
	cut := time.Now().Add(-p.idle)
	for size, list := range p.free {
		i := 0
		for i < len(list) && list[i].back.Before(cut) {
			list[i] = freeBuf{}
			p.kept -= int64(size)
			i++
		}
		if p.free[size] = list[i:]; len(list[i:]) == 0 {
			delete(p.free, size)
		}
	}
	if p.kept > 0 {
		p.timer = time.AfterFunc(p.idle, p.expire)
	}
}

// Flush lets go of every buffer kept for later.
func (p *Pool) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.free)
	p.kept = 0
}

// Stats are what a pool lends and keeps, in bytes.
type Stats struct {
	Lent, Kept, Peak int64
}

// Stats returns the pool's counts now.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Lent: p.lent, Kept: p.kept, Peak: p.peak}
}
