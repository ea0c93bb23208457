package upload

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// recorder keeps the caller's record (SetRecord) in the upload's state as
// parts are handed on. The record is taken in the goroutine calling Write,
// every part, so that it covers every byte handed on; the state is saved
// by a goroutine of its own, the latest record winning, so that a slow
// state store (a file synced to disk, a KV bucket across the network)
// never holds up the stream. stop waits for the last save before anything
// else writes the state.
type recorder struct {
	f        func() json.RawMessage
	recorded json.RawMessage // what f gave in the run before (a resume)

	store StateStore
	log   func(string)

	mu      sync.Mutex
	pending []byte // the next state to save, nil when none
	wake    chan struct{}
	done    chan struct{}
	started bool
	stopped bool
	failed  bool
}

// SetRecord makes f the source of what the caller needs to make the same
// bytes again on a resume (the compression decisions of --compress auto):
// its answer is stored with the upload's state as parts are handed on, and
// when a failed run keeps the upload; the resumed Target's Recorded returns
// it. f is called from the goroutine calling Write and Abort. Set it
// before the first Write.
func (t *Target) SetRecord(f func() json.RawMessage) {
	t.rec.f, t.rec.store, t.rec.log = f, t.state, t.log
}

// Recorded is what the SetRecord function gave in the run this one
// resumes; nil for a new upload.
func (t *Target) Recorded() json.RawMessage { return t.rec.recorded }

// note takes the record now and has st saved with it.
func (r *recorder) note(st *state) {
	if r.f == nil || st == nil || r.stopped {
		return
	}
	st.Extra = r.f()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return
	}
	r.mu.Lock()
	r.pending = append(b, '\n')
	r.mu.Unlock()
	if !r.started {
		r.started = true
		r.wake, r.done = make(chan struct{}, 1), make(chan struct{})
		go r.loop()
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) loop() {
	defer close(r.done)
	for range r.wake {
		r.mu.Lock()
		b := r.pending
		r.pending = nil
		r.mu.Unlock()
		if b == nil {
			continue
		}
		if err := r.store.Save(context.Background(), b); err != nil && !r.failed {
			r.failed = true
			r.log(fmt.Sprintf("recording the upload in %s: %v (a resume may send again what this run sent)", r.store.Name(), err))
		}
	}
}

// last saves st with the record as it is now, in the caller's goroutine:
// the last word of a failed run that keeps the upload for a resume. Call
// it after stop.
func (r *recorder) last(ctx context.Context, st *state) {
	if r.f == nil || st == nil {
		return
	}
	st.Extra = r.f()
	if err := st.save(ctx, r.store); err != nil {
		r.log(fmt.Sprintf("recording the upload in %s: %v", r.store.Name(), err))
	}
}

// stop saves what is pending and ends the saving goroutine.
func (r *recorder) stop() {
	if r.stopped {
		return
	}
	r.stopped = true
	if r.started {
		close(r.wake)
		<-r.done
	}
}
