package bufpool

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"
)

func TestLendAndReuse(t *testing.T) {
	ctx := context.Background()
	p := New(10 << 20)
	var made int
	p.OnNew = func([]byte) { made++ }
	a, _ := p.Get(ctx, 4<<20)
	b, _ := p.Get(ctx, 4<<20)
	p.Put(a)
	c, _ := p.Get(ctx, 4<<20)
	if made != 2 || &c[0] != &a[0] {
		t.Fatalf("a buffer given back was not lent again: %d made", made)
	}
	if s := p.Stats(); s.Lent != 8<<20 || s.Peak != 8<<20 {
		t.Fatalf("stats %+v", s)
	}
	// A size that does not fit beside the lent and kept ones makes room:
	// the kept buffers of another size go first.
	p.Put(b)
	d, err := p.Get(ctx, 6<<20)
	if err != nil || p.Stats().Kept != 0 {
		t.Fatalf("a 6 MiB buffer beside 4 MiB lent and 4 MiB kept: %v, %+v", err, p.Stats())
	}
	p.Put(c)
	p.Put(d)
	if _, err := p.Get(ctx, 11<<20); err == nil {
		t.Fatal("a buffer larger than the limit was lent")
	}
}

// Get waits while the limit is reached, for a Put or the context.
func TestBound(t *testing.T) {
	p := New(2 << 20)
	ctx := context.Background()
	a, _ := p.Get(ctx, 1<<20)
	b, _ := p.Get(ctx, 1<<20)
	got := make(chan []byte)
	go func() { c, _ := p.Get(ctx, 1<<20); got <- c }()
	select {
	case <-got:
		t.Fatal("a third buffer was lent past the limit")
	case <-time.After(50 * time.Millisecond):
	}
	p.Put(a)
	if c := <-got; &c[0] != &a[0] {
		t.Fatal("the waiting Get did not get the buffer given back")
	}
	cctx, cancel := context.WithCancelCause(ctx)
	stop := errors.New("stop")
	cancel(stop)
	if _, err := p.Get(cctx, 1<<20); !errors.Is(err, stop) {
		t.Fatalf("a Get under a cancelled context: %v", err)
	}
	p.Put(b)
	if s := p.Stats(); s.Lent != 1<<20 || s.Peak != 2<<20 {
		t.Fatalf("stats %+v", s)
	}
}

// Buffers kept for later are let go after the idle time, or by Flush:
// then nothing holds them.
func TestLetGo(t *testing.T) {
	p := New(8 << 20)
	p.idle = 20 * time.Millisecond
	var mu sync.Mutex
	var ws []weak.Pointer[byte]
	p.OnNew = func(b []byte) { mu.Lock(); ws = append(ws, weak.Make(&b[0])); mu.Unlock() }
	b, _ := p.Get(context.Background(), 1<<20)
	p.Put(b)
	b = nil
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Kept != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the kept buffer was never let go")
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	mu.Lock()
	defer mu.Unlock()
	if ws[0].Value() != nil {
		t.Fatal("a buffer let go is still reachable")
	}
}
