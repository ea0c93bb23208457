package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"vmimport/batch"
	"vmimport/internal/kv"
	"vmimport/upload"
)

// State is where a disk of the queue stands.
type State string

// States.
const (
	Queued  State = "queued"  // a message waits for a worker (again, after a retry or a hand-back)
	Running State = "running" // a worker converts it
	Done    State = "done"    // converted (or found done: the outcome says skipped)
	Failed  State = "failed"  // failed for good: a broken image, or out of deliveries
)

// Status is what the bucket holds of one disk (key "status.KEY"): written
// by the submitter when it queues the disk and by the worker that runs it.
type Status struct {
	Key    string `json:"key"`
	Line   int    `json:"line,omitempty"`
	Source string `json:"source"`
	Output string `json:"output"`
	State  State  `json:"state"`
	// Digest covers the settings that shape the output: a resubmission
	// with other settings converts a done disk again.
	Digest    string    `json:"digest"`
	Submitted time.Time `json:"submitted"`
	// Worker runs the disk, or ran it last; Delivery is the delivery of
	// its message that did (1 for the first).
	Worker   string `json:"worker,omitempty"`
	Delivery int    `json:"delivery,omitempty"`
	Phase    string `json:"phase,omitempty"`
	// DoneBytes of VirtualBytes: how far the pass is.
	DoneBytes    int64 `json:"done_bytes,omitempty"`
	VirtualBytes int64 `json:"virtual_bytes,omitempty"`
	// Note says what happened last: a retry and why, a hand-back.
	Note    string    `json:"note,omitempty"`
	Updated time.Time `json:"updated"`
	// SourceID is the source as the worker found it when the disk was
	// done: a resubmission from a node that sees the source redoes a disk
	// whose source changed since.
	SourceID *upload.SourceID `json:"source_id,omitempty"`
	// Outcome is how the disk ended (done or failed): the line --wait and
	// the local batch print.
	Outcome *batch.Outcome `json:"outcome,omitempty"`
	// Heartbeat is how often the worker of a running disk writes its
	// status: one that missed several is stale.
	Heartbeat time.Duration `json:"heartbeat,omitempty"`
	// Stale is set by Statuses, not stored: the disk is running, but its
	// worker missed its heartbeats (killed, frozen, cut off); after the
	// queue's ack wait another worker takes the disk over.
	Stale bool `json:"stale,omitempty"`
}

// staleMargin is added to three missed heartbeats before a running
// status is told stale: the clocks of the worker's node and the reader's
// may differ by that much.
const staleMargin = 5 * time.Second

// stale reports whether a running status missed its worker's heartbeats
// at now.
func (s *Status) stale(now time.Time) bool {
	hb := s.Heartbeat
	if hb <= 0 {
		hb = 2 * time.Second // the longest a worker's tick is
	}
	return s.State == Running && now.Sub(s.Updated) > 3*hb+staleMargin
}

// statusKey is the bucket key of a disk's status.
func statusKey(key string) string { return "status." + key }

// Ended reports whether the disk is done or failed.
func (s *Status) Ended() bool { return s.State == Done || s.State == Failed }

// getStatus reads a disk's status and its revision; (nil, 0, nil) when
// there is none.
func (q *Queue) getStatus(ctx context.Context, key string) (*Status, uint64, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	e, err := q.kv.Get(ctx, statusKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading the status of %s: %w", key, err)
	}
	var s Status
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return nil, e.Revision(), fmt.Errorf("the status of %s: %w", key, err)
	}
	return &s, e.Revision(), nil
}

// putStatus writes a disk's status into store: a worker's, fenced by its
// lease.
func putStatus(ctx context.Context, store kv.Store, s *Status) error {
	s.Updated = time.Now().UTC()
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return store.Put(ctx, statusKey(s.Key), b)
}

// Statuses lists the status of every disk in the queue, oldest submission
// first.
func (q *Queue) Statuses(ctx context.Context) ([]Status, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	w, err := q.kv.Watch(ctx, "status.*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("listing the disks of queue %s: %w", q.name, err)
	}
	defer w.Stop()
	var all []Status
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("listing the disks of queue %s: the watch ended", q.name)
			}
			if e == nil {
				now := time.Now()
				for i := range all {
					all[i].Stale = all[i].stale(now)
				}
				slices.SortStableFunc(all, func(a, b Status) int {
					if c := a.Submitted.Compare(b.Submitted); c != 0 {
						return c
					}
					return a.Line - b.Line
				})
				return all, nil
			}
			var s Status
			if json.Unmarshal(e.Value(), &s) == nil {
				all = append(all, s)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("listing the disks of queue %s: %w", q.name, ctx.Err())
		}
	}
}

// Pending is the number of messages in the queue: disks queued or
// running.
func (q *Queue) Pending(ctx context.Context) (uint64, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	info, err := q.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
