// Package kvtest is the conformance suite of kv.Store: every
// implementation (the folder, the JetStream bucket) runs the same cases,
// as restic runs one suite against each of its backends.
package kvtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"vmimport/internal/kv"
)

// Run runs the suite; newStore returns an empty store for one case.
func Run(t *testing.T, newStore func(t *testing.T) kv.Store) {
	for _, c := range []struct {
		name string
		f    func(*testing.T, kv.Store)
	}{
		{"GetPutDelete", getPutDelete},
		{"Revisions", revisions},
		{"CompareAndSet", compareAndSet},
		{"ConditionOnAnotherKey", otherKey},
		{"Fenced", fencedWrites},
		{"ConcurrentIncrements", concurrent},
		{"BadKeys", badKeys},
	} {
		t.Run(c.name, func(t *testing.T) { c.f(t, newStore(t)) })
	}
}

func getPutDelete(t *testing.T, s kv.Store) {
	ctx := context.Background()
	if _, err := s.Get(ctx, "a"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if _, _, err := s.Entry(ctx, "a"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Entry of a missing key: %v", err)
	}
	must(t, s.Put(ctx, "a", []byte("1")))
	must(t, s.Put(ctx, "a", []byte("22")))
	if b, err := s.Get(ctx, "a"); err != nil || string(b) != "22" {
		t.Fatalf("Get: %q %v", b, err)
	}
	must(t, s.Put(ctx, "empty", nil))
	if b, err := s.Get(ctx, "empty"); err != nil || len(b) != 0 {
		t.Fatalf("Get of an empty value: %q %v", b, err)
	}
	must(t, s.Delete(ctx, "a"))
	if _, err := s.Get(ctx, "a"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get of a deleted key: %v", err)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
}

// revisions grow with every write, across keys, and a deleted key's
// revision is not given again.
func revisions(t *testing.T, s kv.Store) {
	ctx := context.Background()
	var last uint64
	for i, key := range []string{"a", "b", "a"} {
		must(t, s.Put(ctx, key, []byte(strconv.Itoa(i))))
		_, rev, err := s.Entry(ctx, key)
		must(t, err)
		if rev <= last {
			t.Fatalf("write %d to %s: revision %d after %d", i, key, rev, last)
		}
		last = rev
	}
	must(t, s.Delete(ctx, "a"))
	rev, err := s.Swap(ctx, "a", []byte("again"), kv.Cond{})
	must(t, err)
	if rev <= last {
		t.Fatalf("a made again at revision %d, not after %d", rev, last)
	}
}

func compareAndSet(t *testing.T, s kv.Store) {
	ctx := context.Background()
	r1, err := s.Swap(ctx, "k", []byte("one"), kv.Cond{})
	must(t, err)
	if _, err := s.Swap(ctx, "k", []byte("two"), kv.Cond{}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("creating an existing key: %v", err)
	}
	r2, err := s.Swap(ctx, "k", []byte("two"), kv.Cond{Rev: r1})
	must(t, err)
	if _, err := s.Swap(ctx, "k", []byte("stale"), kv.Cond{Rev: r1}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("a write at a stale revision: %v", err)
	}
	if err := s.Remove(ctx, "k", kv.Cond{Rev: r1}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("a delete at a stale revision: %v", err)
	}
	if b, rev, err := s.Entry(ctx, "k"); err != nil || string(b) != "two" || rev != r2 {
		t.Fatalf("after refused writes: %q at %d (%v), want two at %d", b, rev, err, r2)
	}
	must(t, s.Remove(ctx, "k", kv.Cond{Rev: r2}))
	if _, err := s.Get(ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("after a conditional delete: %v", err)
	}
}

// otherKey: a write on condition that another key is at a revision.
func otherKey(t *testing.T, s kv.Store) {
	ctx := context.Background()
	g, err := s.Swap(ctx, "lease", []byte("mine"), kv.Cond{})
	must(t, err)
	if _, err := s.Swap(ctx, "state", []byte("v1"), kv.Cond{Key: "lease", Rev: g}); err != nil {
		t.Fatalf("a write under the lease: %v", err)
	}
	g2, err := s.Swap(ctx, "lease", []byte("theirs"), kv.Cond{Rev: g})
	must(t, err)
	if _, err := s.Swap(ctx, "state", []byte("v2"), kv.Cond{Key: "lease", Rev: g}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("a write under a lease taken over: %v", err)
	}
	if err := s.Remove(ctx, "state", kv.Cond{Key: "lease", Rev: g}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("a delete under a lease taken over: %v", err)
	}
	if b, err := s.Get(ctx, "state"); err != nil || string(b) != "v1" {
		t.Fatalf("state %q %v, want v1", b, err)
	}
	must(t, s.Remove(ctx, "state", kv.Cond{Key: "lease", Rev: g2}))
}

// guard is a lease held in the store under test.
type guard struct {
	mu   sync.Mutex
	key  string
	rev  uint64
	lost bool
}

func (g *guard) Hold(write func(string, uint64) error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lost {
		return kv.ErrFenced
	}
	return write(g.key, g.rev)
}

func fencedWrites(t *testing.T, s kv.Store) {
	ctx := context.Background()
	rev, err := s.Swap(ctx, "lease.x", []byte("a"), kv.Cond{})
	must(t, err)
	g := &guard{key: "lease.x", rev: rev}
	f := kv.Fenced(s, g)
	must(t, f.Put(ctx, "status", []byte("running")))
	must(t, f.Put(ctx, "state", []byte("parts")))
	// The holder renews: its writes go on under the new revision.
	g.mu.Lock()
	g.rev, err = s.Swap(ctx, "lease.x", []byte("a"), kv.Cond{Rev: g.rev})
	g.mu.Unlock()
	must(t, err)
	must(t, f.Put(ctx, "status", []byte("converting")))
	// Another holder takes the lease over and writes: the first one's
	// writes and deletes fail, and change nothing.
	rev2, err := s.Swap(ctx, "lease.x", []byte("b"), kv.Cond{Rev: g.rev})
	must(t, err)
	g2 := &guard{key: "lease.x", rev: rev2}
	must(t, kv.Fenced(s, g2).Put(ctx, "status", []byte("done")))
	must(t, kv.Fenced(s, g2).Delete(ctx, "state"))
	if err := f.Put(ctx, "status", []byte("cancelled")); !errors.Is(err, kv.ErrFenced) {
		t.Fatalf("a fenced holder's write: %v", err)
	}
	if err := f.Put(ctx, "state", []byte("parts again")); !errors.Is(err, kv.ErrFenced) {
		t.Fatalf("a fenced holder's write of a deleted key: %v", err)
	}
	if err := f.Delete(ctx, "status"); !errors.Is(err, kv.ErrFenced) {
		t.Fatalf("a fenced holder's delete: %v", err)
	}
	if b, err := f.Get(ctx, "status"); err != nil || string(b) != "done" {
		t.Fatalf("status %q %v, want the new holder's done", b, err)
	}
	if _, err := f.Get(ctx, "state"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("state came back: %v", err)
	}
	// A holder that knows it lost the lease does not even try.
	g.lost = true
	if err := f.Put(ctx, "other", nil); !errors.Is(err, kv.ErrFenced) {
		t.Fatalf("a write of a holder that knows: %v", err)
	}
	if _, err := f.Swap(ctx, "other", nil, kv.Cond{}); err == nil {
		t.Fatal("a fenced store took a condition of its own")
	}
}

// concurrent: compare-and-set loops of many writers lose no increment.
func concurrent(t *testing.T, s kv.Store) {
	ctx := context.Background()
	const writers, each = 4, 10
	must(t, s.Put(ctx, "n", []byte("0")))
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					b, rev, err := s.Entry(ctx, "n")
					if err != nil {
						errs <- err
						return
					}
					n, _ := strconv.Atoi(string(b))
					_, err = s.Swap(ctx, "n", []byte(strconv.Itoa(n+1)), kv.Cond{Rev: rev})
					if err == nil {
						break
					}
					if !errors.Is(err, kv.ErrConflict) {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if b, _ := s.Get(ctx, "n"); string(b) != fmt.Sprint(writers*each) {
		t.Fatalf("counter %s, want %d", b, writers*each)
	}
}

func badKeys(t *testing.T, s kv.Store) {
	ctx := context.Background()
	for _, bad := range []string{"", "a/b", "../x", ".hidden", "sp ace", "a*", "a>"} {
		if err := s.Put(ctx, bad, nil); err == nil {
			t.Errorf("key %q accepted", bad)
		}
		if _, err := s.Swap(ctx, "ok", nil, kv.Cond{Key: bad, Rev: 1}); err == nil {
			t.Errorf("condition key %q accepted", bad)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
