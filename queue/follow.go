package queue

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"vmimport/batch"
	"vmimport/job"
	"vmimport/reader/image"
	"vmimport/stream"
)

// Follow watches the disks of a submission (subs, as Submit returned them
// for items) until each has ended, and tells events what happens as a
// local batch would: a disk starts, shows its phase and progress, ends
// with its outcome (a disk done before the submission ends Skipped at
// once). It returns the outcomes in the order of items. When ctx ends
// first, the disks still queued or running have the status "queued" or
// "running" (they go on in the queue).
func (q *Queue) Follow(ctx context.Context, items []batch.Item, subs []Submitted, events func(batch.Event)) []batch.Outcome {
	if events == nil {
		events = func(batch.Event) {}
	}
	f := &follower{queue: q, items: items, subs: subs, events: events, byKey: map[string]int{},
		outs: make([]batch.Outcome, len(subs)), disks: make([]followed, len(subs))}
	left := 0
	for i, s := range subs {
		f.byKey[s.Key] = i
		f.outs[i] = batch.Outcome{Line: s.Line, Source: s.Source, Output: s.Output, Status: batch.Status(Queued)}
		if s.Result == ResultDone {
			oc := batch.Outcome{Line: s.Line, Source: s.Source, Output: s.Output}
			if s.Status != nil && s.Status.Outcome != nil {
				oc = *s.Status.Outcome
				oc.Line = s.Line
			}
			oc.Status, oc.Seconds, oc.SkippedBecause = batch.Skipped, 0, s.Note
			oc.Err, oc.Error = nil, ""
			f.end(i, oc, false)
			continue
		}
		left++
	}
	for left > 0 && ctx.Err() == nil {
		left = f.watch(ctx, left)
	}
	for i := range f.outs {
		if !f.disks[i].ended {
			f.outs[i].Error = "still " + string(f.outs[i].Status) + " in the queue when the wait stopped: it goes on (convert batch status)"
		}
	}
	return f.outs
}

type follower struct {
	queue  *Queue
	items  []batch.Item
	subs   []Submitted
	events func(batch.Event)
	byKey  map[string]int
	outs   []batch.Outcome
	disks  []followed
}

// followed is what the follower has told of a disk.
type followed struct {
	started, sized, ended bool
	phase, note           string
	done                  int64
}

// watch follows the status keys until every disk ended, ctx ends, or it is
// time to watch anew (every 30s, and when the watch breaks: the server
// restarted). It returns the number of disks left.
func (f *follower) watch(ctx context.Context, left int) int {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reconnected := f.q().Reconnected()
	w, err := f.q().kv.Watch(wctx, "status.*", jetstream.IgnoreDeletes())
	if err != nil {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		return left
	}
	defer w.Stop()
	for left > 0 {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return left
			}
			if e == nil {
				continue
			}
			if f.update(e) {
				left--
			}
		case <-reconnected:
			return left
		case <-wctx.Done():
			return left
		}
	}
	return left
}

func (f *follower) q() *Queue { return f.queue }

// update handles one status entry; it reports whether the disk ended.
func (f *follower) update(e jetstream.KeyValueEntry) bool {
	var st Status
	if json.Unmarshal(e.Value(), &st) != nil {
		return false
	}
	i, ok := f.byKey[st.Key]
	if !ok || f.disks[i].ended || e.Revision() <= f.subs[i].rev {
		return false
	}
	d := &f.disks[i]
	it := &f.items[i]
	f.outs[i].Status = batch.Status(st.State)
	switch st.State {
	case Running:
		f.start(i)
		if st.VirtualBytes > 0 && !d.sized {
			d.sized = true
			f.events(batch.Event{Kind: batch.DiskEvent, Index: i, Item: it, Job: job.Event{Kind: job.Started, Info: &image.Info{VirtualSize: st.VirtualBytes}}})
		}
		if st.Phase != "" && st.Phase != d.phase {
			d.phase = st.Phase
			f.events(batch.Event{Kind: batch.DiskEvent, Index: i, Item: it, Job: job.Event{Kind: job.PhaseChanged, Phase: job.Phase(st.Phase)}})
		}
		if st.DoneBytes != d.done {
			d.done = st.DoneBytes
			f.events(batch.Event{Kind: batch.DiskEvent, Index: i, Item: it, Job: job.Event{Kind: job.Progress, Stats: stream.Stats{Done: st.DoneBytes, Size: st.VirtualBytes}}})
		}
	case Queued:
		if st.Note != "" && st.Note != d.note {
			d.note = st.Note
			f.events(batch.Event{Kind: batch.DiskEvent, Index: i, Item: it, Job: job.Event{Kind: job.Notice, Message: st.Note}})
		}
	case Done, Failed:
		oc := batch.Outcome{Line: st.Line, Source: st.Source, Output: st.Output, Status: batch.Failed}
		if st.Outcome != nil {
			oc = *st.Outcome
		}
		oc.Line = f.subs[i].Line
		f.end(i, oc, true)
		return true
	}
	return false
}

func (f *follower) start(i int) {
	if !f.disks[i].started {
		f.disks[i].started = true
		f.events(batch.Event{Kind: batch.DiskStarted, Index: i, Item: &f.items[i]})
	}
}

func (f *follower) end(i int, oc batch.Outcome, start bool) {
	if start {
		f.start(i)
	}
	f.disks[i].ended = true
	f.outs[i] = oc
	f.events(batch.Event{Kind: batch.DiskDone, Index: i, Item: &f.items[i], Outcome: &f.outs[i]})
}
