package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"vmimport/job"
)

// showProgress decides whether bars are drawn on w: always, never, or auto
// (when w is a terminal).
func showProgress(mode string, w io.Writer) bool {
	switch mode {
	case "always":
		return true
	case "auto":
		if f, ok := w.(*os.File); ok {
			return term.IsTerminal(int(f.Fd()))
		}
	}
	return false
}

// bars draws progress bars on a terminal (github.com/vbauerster/mpb/v8) and
// prints lines above them; without bars it prints the lines as they come.
type bars struct {
	w  io.Writer
	p  *mpb.Progress // nil: no bars
	mu sync.Mutex    // serializes lines written without bars
}

func newBars(mode string, w io.Writer) *bars {
	b := &bars{w: w}
	if showProgress(mode, w) {
		b.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond), mpb.ForceTTY())
	}
	return b
}

// printf writes a line above the bars.
func (b *bars) printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if b.p != nil {
		if _, err := io.WriteString(b.p, line); err == nil {
			return
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	io.WriteString(b.w, line)
}

// bar is one bar: a name, the phase, the bytes done of a total, the rate
// and the time left.
type bar struct {
	b     *mpb.Bar
	phase atomic.Value // string
}

// add adds a bar of total bytes; nil without bars.
func (b *bars) add(name string, total int64, priority int) *bar {
	if b.p == nil {
		return nil
	}
	br := &bar{}
	br.phase.Store("")
	br.b = b.p.New(total, mpb.BarStyle().Lbound("[").Rbound("]"),
		mpb.BarPriority(priority),
		mpb.PrependDecorators(
			decor.Name(name, decor.WCSyncSpaceR),
			decor.Any(func(decor.Statistics) string { return br.phase.Load().(string) }, decor.WCSyncSpaceR),
		),
		mpb.AppendDecorators(
			decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
			decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
			decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO, decor.WCSyncSpace), ""),
		),
	)
	return br
}

func (br *bar) setPhase(p string) {
	if br != nil {
		br.phase.Store(p)
	}
}

func (br *bar) set(n int64) {
	if br != nil {
		br.b.SetCurrent(n)
	}
}

// done ends the bar: complete, or aborted where it stands.
func (br *bar) done(ok bool) {
	if br == nil {
		return
	}
	if ok {
		br.b.SetTotal(-1, true)
	} else {
		br.b.Abort(false)
	}
}

// wait waits for the bars to draw their last state.
func (b *bars) wait() {
	if b.p != nil {
		b.p.Wait()
	}
}

// runUI shows one job: a bar with its phase, and its warnings, notices
// and check findings as lines above it.
type runUI struct {
	*bars
	asJSON bool
	bar    *bar
}

func newRunUI(mode string, w io.Writer, asJSON bool) *runUI {
	return &runUI{bars: newBars(mode, w), asJSON: asJSON}
}

func (u *runUI) event(e job.Event) {
	switch e.Kind {
	case job.Started:
		u.bar = u.add("", e.Info.VirtualSize, 0)
	case job.PhaseChanged:
		u.bar.setPhase(string(e.Phase))
	case job.Progress:
		u.bar.set(e.Stats.Done)
	case job.Checked:
		if !u.asJSON {
			// The findings go into the JSON summary; stderr may be
			// where the summary goes, so it stays clean.
			u.printf("%s", checkText(e.Check))
		}
	case job.Warning:
		u.printf("convert: warning: %s\n", e.Message)
	case job.Notice:
		u.printf("convert: %s\n", e.Message)
	}
}

func (u *runUI) finish(ok bool) {
	if u.bar != nil {
		u.bar.done(ok)
	}
	u.wait()
}
