package remote

import (
	"context"
	"sync/atomic"
	"time"

	"vmimport/internal/units"
)

// pace is the least a response body must bring: min bytes a second over
// every window (none when min <= 0).
type pace struct {
	min    int64
	window time.Duration
}

func (op *Opener) pace() pace { return pace{min: op.o.MinRate, window: op.o.RateWindow} }

// rate is the minimum for messages: "64 KiB/s".
func (p pace) rate() string { return units.Bytes(p.min) + "/s" }

// slowWatch watches one body's pace.
type slowWatch struct {
	done  chan struct{}
	fired func() bool
	stop  func()
}

// watch cancels a body of want bytes, of which got have come, when a
// window passes with fewer than min x window bytes come in it (or fewer
// than were left at its start): a trickle that keeps the idle timer
// from ever firing. fired tells whether it did.
func (p pace) watch(got *atomic.Int64, want int64, cancel context.CancelFunc) *slowWatch {
	var fired atomic.Bool
	w := &slowWatch{done: make(chan struct{}), fired: fired.Load}
	if p.min <= 0 || p.window <= 0 {
		w.stop = func() {}
		return w
	}
	per := int64(float64(p.min) * p.window.Seconds())
	t := time.NewTicker(p.window)
	go func() {
		defer t.Stop()
		last := int64(0)
		for {
			select {
			case <-w.done:
				return
			case <-t.C:
			}
			now := got.Load()
			if now-last < min(per, want-last) {
				fired.Store(true)
				cancel()
				return
			}
			last = now
		}
	}()
	w.stop = func() { close(w.done) }
	return w
}
