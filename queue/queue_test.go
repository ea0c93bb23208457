package queue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"vmimport/batch"
	"vmimport/internal/kv"
	"vmimport/internal/kv/kvtest"
	"vmimport/internal/natstest"
	"vmimport/job"
)

func open(t *testing.T, srv *natstest.Server) *Queue {
	t.Helper()
	q, err := Open(context.Background(), Config{URL: srv.URL, Name: "t", Client: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// TestBucketStore: the bucket is a kv.Store, as the folder store is: the
// same conformance suite (kvtest) against a real nats-server.
func TestBucketStore(t *testing.T) {
	srv := natstest.Start(t)
	n := 0
	kvtest.Run(t, func(t *testing.T) kv.Store {
		n++
		q, err := Open(context.Background(), Config{URL: srv.URL, Name: fmt.Sprintf("kv%d", n), Client: t.Name()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Close)
		return q.Store()
	})
}

// TestLease: one holder at a time; a lease not renewed for its TTL (by the
// server's clock) is taken over, and its old holder finds it lost.
func TestLease(t *testing.T) {
	srv := natstest.Start(t)
	q := open(t, srv)
	ctx := context.Background()
	const ttl = 600 * time.Millisecond
	a, _, err := q.acquire(ctx, "s3://b/k", "disk-1", "A", ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, wait, err := q.acquire(ctx, "s3://b/k", "disk-1", "B", ttl); !errors.Is(err, ErrLeaseBusy) || wait <= 0 || wait > ttl {
		t.Fatalf("B while A holds it: %v, wait %s", err, wait)
	}
	if err := a.renew(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.acquire(ctx, "s3://b/other", "disk-2", "B", ttl); err != nil {
		t.Fatalf("another output: %v", err)
	}
	// B takes it over once the TTL has passed by the server's clock,
	// waiting as long as each refusal says the lease has to live.
	start := time.Now()
	var b *lease
	for {
		var wait time.Duration
		b, wait, err = q.acquire(ctx, "s3://b/k", "disk-1", "B", ttl)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLeaseBusy) || time.Since(start) > 10*ttl {
			t.Fatalf("B after the TTL: %v", err)
		}
		time.Sleep(wait)
	}
	if !a.fenced() {
		t.Error("A is not fenced after a TTL without renewal")
	}
	if err := a.renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("A's renewal after B took over: %v", err)
	}
	b.release(ctx)
	if _, _, err := q.acquire(ctx, "s3://b/k", "disk-1", "C", ttl); err != nil {
		t.Fatalf("C after B released it: %v", err)
	}
}

// TestSubmitTwice: a resubmitted manifest queues nothing twice: one
// message per disk while queued; a failed disk is queued again; a done one
// is not.
func TestSubmitTwice(t *testing.T) {
	srv := natstest.Start(t)
	q := open(t, srv)
	ctx := context.Background()
	dir := t.TempDir()
	items := []batch.Item{
		{Line: 1, Spec: job.Spec{Source: filepath.Join(dir, "a.raw"), Output: filepath.Join(dir, "a.out")}},
		{Line: 2, Spec: job.Spec{Source: filepath.Join(dir, "b.raw"), Output: "s3://bucket/b.raw"}},
	}
	subs, err := q.Submit(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if s.Result != ResultQueued {
			t.Errorf("first submission: %+v", s)
		}
	}
	subs, err = q.Submit(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if s.Result != ResultAlreadyQueued {
			t.Errorf("second submission: %+v", s)
		}
	}
	if n, _ := q.Pending(ctx); n != 2 {
		t.Errorf("%d messages queued, want 2", n)
	}
	// A publish the server must refuse: a second message for a queued disk.
	if err := q.publish(ctx, &items[0], subs[0].Key, 999, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Pending(ctx); n != 2 {
		t.Errorf("%d messages queued after a duplicate publish, want 2", n)
	}
	// Secrets in an endpoint are refused.
	bad := items[1]
	bad.Spec.Upload.Endpoint = "http://key:secret@127.0.0.1:9000"
	if _, err := q.Submit(ctx, []batch.Item{bad}); err == nil {
		t.Error("an endpoint with credentials was queued")
	}
}
