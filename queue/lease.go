package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"vmimport/internal/kv"
)

// A lease keeps two workers from writing one output at once. It is a key
// of the bucket, named after the output (not the disk: two manifests may
// name one object), created or taken over with a revision check and
// renewed by its holder with one. A lease is expired when the server's
// clock has moved more than its TTL past its last renewal: the server
// stamps every revision, so no two nodes' clocks are compared. A holder
// that could not renew for three quarters of the TTL (the server out of
// reach) stops writing on its own before anyone may take the lease over.
type lease struct {
	q      *Queue
	key    string
	holder string
	ttl    time.Duration
	value  []byte

	mu      sync.Mutex
	rev     uint64
	renewed time.Time // when the last renewal that succeeded was sent (local clock)
	lost    bool      // taken over by another holder, or released
}

var _ kv.Guard = (*lease)(nil)

// Hold calls write with the lease's key and revision, no renewal running
// meanwhile: a write fenced by the lease (kv.Fenced) holds only while the
// lease is still at that revision, which the server checks.
func (l *lease) Hold(write func(key string, rev uint64) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost {
		return fmt.Errorf("%w: %s", kv.ErrFenced, l.key)
	}
	err := write(l.key, l.rev)
	if errors.Is(err, kv.ErrFenced) {
		l.lost = true
	}
	return err
}

// check renews the lease, as the last word before the holder does
// something others may take for done (complete an upload, build what it
// shares): an error wrapping kv.ErrFenced when it is another's now.
func (l *lease) check(ctx context.Context) error {
	err := l.renew(ctx)
	if errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("%w (%w)", kv.ErrFenced, err)
	}
	return err
}

// leaseValue is what a lease key holds.
type leaseValue struct {
	Holder string        `json:"holder"`
	Disk   string        `json:"disk"`
	Output string        `json:"output"`
	TTL    time.Duration `json:"ttl"`
}

// leaseKey is the key of the lease of an output.
func leaseKey(output string) string {
	sum := sha256.Sum256([]byte(output))
	return "lease." + hex.EncodeToString(sum[:12])
}

// acquire takes the lease of output for holder, when it is free, expired,
// or already holder's. Held by another, it returns ErrLeaseBusy with the
// holder and how long the lease has at most to live.
func (q *Queue) acquire(ctx context.Context, output, disk, holder string, ttl time.Duration) (*lease, time.Duration, error) {
	key := leaseKey(output)
	val, _ := json.Marshal(leaseValue{Holder: holder, Disk: disk, Output: output, TTL: ttl})
	for range 5 {
		sent := time.Now()
		cctx, cancel := opCtx(ctx)
		e, err := q.kv.Get(cctx, key)
		cancel()
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
			cctx, cancel := opCtx(ctx)
			rev, err = q.kv.Create(cctx, key, val)
			cancel()
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // another worker was quicker: look again
			}
		case err != nil:
		default:
			var cur leaseValue
			// Another worker's lease, or this worker's for another disk
			// (two disks of one output on one worker): busy until it
			// expires.
			if json.Unmarshal(e.Value(), &cur) == nil && (cur.Holder != holder || cur.Disk != disk) {
				now, nerr := q.serverNow(ctx, holder)
				if nerr != nil {
					return nil, 0, nerr
				}
				lttl := cur.TTL
				if lttl <= 0 {
					lttl = ttl
				}
				if age := now.Sub(e.Created()); age < lttl {
					return nil, lttl - age, fmt.Errorf("%w: %s holds the lease of %s (renewed %s ago)", ErrLeaseBusy, cur.Holder, output, age.Round(time.Millisecond))
				}
			}
			cctx, cancel := opCtx(ctx)
			rev, err = q.kv.Update(cctx, key, val, e.Revision())
			cancel()
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			}
		}
		if err != nil {
			return nil, 0, fmt.Errorf("taking the lease of %s: %w", output, err)
		}
		return &lease{q: q, key: key, holder: holder, ttl: ttl, value: val, rev: rev, renewed: sent}, 0, nil
	}
	return nil, time.Second, fmt.Errorf("%w: the lease of %s changes hands too fast", ErrLeaseBusy, output)
}

// serverNow is the server's clock: the stamp of a revision just written.
func (q *Queue) serverNow(ctx context.Context, holder string) (time.Time, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	key := "clock." + keySafe(holder)
	rev, err := q.kv.Put(ctx, key, nil)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the server's clock: %w", err)
	}
	e, err := q.kv.GetRevision(ctx, key, rev)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the server's clock: %w", err)
	}
	return e.Created(), nil
}

// renew extends the lease; ErrLeaseLost when another worker took it.
func (l *lease) renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost {
		return fmt.Errorf("%w: %s", ErrLeaseLost, l.key)
	}
	sent := time.Now()
	cctx, cancel := opCtx(ctx)
	defer cancel()
	rev, err := l.q.kv.Update(cctx, l.key, l.value, l.rev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		l.lost = true
		return fmt.Errorf("%w: %s", ErrLeaseLost, l.key)
	}
	if err != nil {
		return err
	}
	l.rev, l.renewed = rev, sent
	return nil
}

// fenced reports whether the holder must stop writing: its last renewal
// that succeeded was sent three quarters of the TTL ago or more.
func (l *lease) fenced() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.renewed) >= l.ttl*3/4
}

// release gives the lease up, if it is still this holder's.
func (l *lease) release(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost {
		return
	}
	l.lost = true // no write is made under it from now on
	cctx, cancel := opCtx(ctx)
	defer cancel()
	l.q.kv.Delete(cctx, l.key, jetstream.LastRevision(l.rev))
}

// keySafe maps a name to the characters a key takes.
func keySafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
