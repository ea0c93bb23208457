package upload

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"vmimport/internal/objstore"
)

// job is one part for a sender, who gives its buffer back once done.
type job struct {
	num  int32
	buf  []byte // nil for a part of zeros
	n    int64
	head bool // buf is part 1's
}

// senders are the goroutines that send parts, Concurrency of them; the
// first failure cancels the rest.
type senders struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	g      errgroup.Group
	jobs   chan job
	pool   *pool
	closed bool
	n      int
	busy   atomic.Int32 // senders with a part
	sent   atomic.Int32 // parts the senders finished
}

// startSenders starts n senders that give each job to send and its
// buffer back to pool afterwards.
func startSenders(ctx context.Context, n int, pool *pool, send func(context.Context, job) error) *senders {
	s := &senders{jobs: make(chan job), n: n, pool: pool}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	pool.ctx, pool.failed = s.ctx, s.failed
	s.g.SetLimit(n)
	for range n {
		s.g.Go(func() error {
			for j := range s.jobs {
				var err error
				s.busy.Add(1)
				if s.ctx.Err() == nil {
					err = send(s.ctx, j)
				}
				s.busy.Add(-1)
				s.sent.Add(1)
				s.giveBack(j)
				if err != nil {
					s.cancel(err)
					return err
				}
			}
			return nil
		})
	}
	return s
}

// Backlogged reports whether the upload is the bottleneck: every sender is
// busy with a part, so the next part would wait (see saturated). The encoder's workers ask
// it to decide whether compressing is worth their time (--compress auto).
// Safe for concurrent use.
func (t *Target) Backlogged() bool { return t.send != nil && t.send.saturated() }

// saturated reports whether every sender has a part (the next part would
// wait for one), or whether too few parts went yet to tell: until every
// sender finished one, the link is taken for the bottleneck, as it is for
// most uploads (on a fast link the first parts go quickly, and that ends).
func (s *senders) saturated() bool {
	return int(s.busy.Load()) >= s.n || int(s.sent.Load()) < s.n
}

// failed is the error that stopped the senders, if any.
func (s *senders) failed() error {
	if err := context.Cause(s.ctx); err != errSendersDone {
		return err
	}
	return nil
}

// dispatch hands a part to a free sender; a part no sender takes has its
// buffer given back.
func (s *senders) dispatch(j job) error {
	select {
	case s.jobs <- j:
		return nil
	case <-s.ctx.Done():
		s.giveBack(j)
		return s.failed()
	}
}

// giveBack returns a part's buffer to the pool.
func (s *senders) giveBack(j job) {
	switch {
	case j.buf == nil:
	case j.head:
		s.pool.putHead(j.buf)
	default:
		s.pool.put(j.buf)
	}
}

// close waits for the parts handed on; it returns the first failure.
func (s *senders) close() error {
	if !s.closed {
		s.closed = true
		close(s.jobs)
	}
	err := s.g.Wait()
	if err == nil {
		err = s.failed()
	}
	// Done: the context goes, so that its parent (a batch's, a worker's)
	// does not keep it among its children for the rest of the process.
	s.cancel(errSendersDone)
	return err
}

// errSendersDone ends the senders' context once they all returned.
var errSendersDone = errors.New("upload: the part senders are done")

// stop cancels the senders and waits for them.
func (s *senders) stop(cause error) {
	s.cancel(cause)
	s.close()
}

// how a part got to the store.
const (
	partSent   = 'S'
	partCopied = 'C'
	partReused = 'R'
)

type partInfo struct {
	md5  [16]byte
	size int64
	how  byte
}

// partLog records the parts in the upload: those this run made, and those
// an earlier run left (for a resume).
type partLog struct {
	mu       sync.Mutex
	parts    map[int32]partInfo
	existing map[int32]objstore.Part // filled before the senders start
	sent     atomic.Int64            // bytes sent (copied parts excluded)
	stored   atomic.Int64            // bytes of parts in the store (sent, copied, found)
	// onStored hears the bytes of each part recorded (Commit's progress).
	onStored func(n int64)
}

func newPartLog() *partLog {
	return &partLog{parts: map[int32]partInfo{}, existing: map[int32]objstore.Part{}}
}

func (l *partLog) record(num int32, sum [16]byte, n int64, how byte) {
	l.mu.Lock()
	l.parts[num] = partInfo{md5: sum, size: n, how: how}
	l.mu.Unlock()
	l.stored.Add(n)
	if l.onStored != nil {
		l.onStored(n)
	}
}

// PartStored is a part of the upload once it is in the store: told to
// Options.Parts, once per part however often it was tried.
type PartStored struct {
	Num   int32
	Bytes int64
	// How it got there: "sent", "copied" (from the zero object, no byte
	// sent) or "reused" (found there from an earlier run, a resume).
	How string
	// Took is how long it took to get there, retries included.
	Took time.Duration
}

// How a part got to the store, as PartStored tells it.
const (
	PartSent   = "sent"
	PartCopied = "copied"
	PartReused = "reused"
)

// stored tells Options.Parts of part j.
func (t *Target) stored(j job, how string, start time.Time) {
	if t.o.Parts != nil {
		t.o.Parts(PartStored{Num: j.num, Bytes: j.n, How: how, Took: time.Since(start)})
	}
}

// sendPart makes part j exist in the upload: already there with the same
// MD5 (resume), copied from the zero object, or sent.
func (t *Target) sendPart(ctx context.Context, j job) error {
	start := time.Now()
	var sum [16]byte
	if j.buf == nil {
		sum = t.zero.sum(j.n)
	} else {
		sum = md5.Sum(j.buf[:j.n])
	}
	want := hex.EncodeToString(sum[:])
	if p, ok := t.parts.existing[j.num]; ok && p.ETag == want && p.Size == j.n {
		t.parts.record(j.num, sum, j.n, partReused)
		t.stored(j, PartReused, start)
		return nil
	}
	if j.buf == nil && j.n > 0 && !t.o.NoZeroCopy && !t.zero.refused.Load() {
		err := t.zero.copyInto(ctx, t.uploadID, j.num, j.n, want)
		if err == nil {
			t.parts.record(j.num, sum, j.n, partCopied)
			t.stored(j, PartCopied, start)
			return nil
		}
		if !errors.Is(err, errCopyRefused) {
			return err
		}
	}
	var body io.ReadSeeker
	if j.buf == nil {
		body = &zeroReader{n: j.n}
	} else {
		body = bytes.NewReader(j.buf[:j.n])
	}
	got, err := t.s.UploadPart(ctx, t.key, t.uploadID, j.num, body, j.n, sum)
	if err != nil {
		return fail("uploading", t.key, j.num, err)
	}
	if got != want {
		return fail("uploading", t.key, j.num, fmt.Errorf("the store answered ETag %q, but the MD5 of the bytes sent is %s", got, want))
	}
	t.parts.sent.Add(j.n)
	t.parts.record(j.num, sum, j.n, partSent)
	t.stored(j, PartSent, start)
	return nil
}
