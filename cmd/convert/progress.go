package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"vmimport/batch"
	"vmimport/internal/units"
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
		b.p = mpb.New(mpb.WithOutput(w), mpb.WithRefreshRate(150*time.Millisecond), mpb.ForceTTY(), mpb.WithAutoRefresh())
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
	b         *mpb.Bar
	phase     atomic.Value // string
	transient bool         // removed when it ends
}

// add adds a bar of total bytes; nil without bars. A transient bar is
// removed when it ends.
func (b *bars) add(name string, total int64, priority int, transient bool) *bar {
	if b.p == nil {
		return nil
	}
	br := &bar{transient: transient}
	br.phase.Store("")
	br.b = b.p.New(total, mpb.BarStyle().Lbound("[").Rbound("]"),
		mpb.BarPriority(priority),
		mpb.BarOptional(mpb.BarRemoveOnComplete(), transient),
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
		br.b.Abort(br.transient)
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
	tasks  *taskBars
}

func newRunUI(mode string, w io.Writer, asJSON bool) *runUI {
	u := &runUI{bars: newBars(mode, w), asJSON: asJSON}
	u.tasks = newTaskBars(u.bars)
	return u
}

func (u *runUI) event(e job.Event) {
	switch e.Kind {
	case job.Started:
		u.bar = u.add("", e.Info.VirtualSize, 0, false)
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
	case job.ImportProgress:
		u.tasks.update(*e.Task, "")
	}
}

func (u *runUI) finish(ok bool) {
	if u.bar != nil {
		u.bar.done(ok)
	}
	u.tasks.finish()
	u.wait()
}

// batchUI shows a batch: a bar per running disk and a total, a line per
// disk as it ends (a JSON object each with --json, on out).
type batchUI struct {
	*bars
	tasks  *taskBars
	out    io.Writer
	asJSON bool
	n      int // disks in the batch

	total   *bar
	disk    map[int]*bar
	virt    map[int]int64 // virtual size of the disks that opened
	done    map[int]int64 // bytes done per disk
	pending int           // disks not started yet
}

func newBatchUI(mode string, w, out io.Writer, asJSON bool, n int) *batchUI {
	u := &batchUI{bars: newBars(mode, w), out: out, asJSON: asJSON, n: n,
		disk: map[int]*bar{}, virt: map[int]int64{}, done: map[int]int64{}, pending: n}
	u.total = u.add(fmt.Sprintf("all %d disks", n), 0, 1<<30, false)
	u.tasks = newTaskBars(u.bars)
	return u
}

// name is how a disk is called in lines and bars.
func diskName(it *batch.Item) string {
	return filepath.Base(it.Spec.Source)
}

func (u *batchUI) event(e batch.Event) {
	name := diskName(e.Item)
	switch e.Kind {
	case batch.DiskStarted:
		u.pending--
		u.disk[e.Index] = u.add(name, 0, e.Index, true)
	case batch.DiskEvent:
		b := u.disk[e.Index]
		switch je := e.Job; je.Kind {
		case job.Started:
			u.virt[e.Index] = je.Info.VirtualSize
			if b != nil {
				b.b.SetTotal(je.Info.VirtualSize, false)
			}
		case job.PhaseChanged:
			b.setPhase(string(je.Phase))
		case job.Progress:
			u.done[e.Index] = je.Stats.Done
			b.set(je.Stats.Done)
		case job.Checked:
			if !u.asJSON {
				u.printf("convert: %s: check: %s\n", name, je.Check.Summary())
			}
		case job.Warning:
			u.printf("convert: %s: warning: %s\n", name, je.Message)
		case job.Notice:
			u.printf("convert: %s: %s\n", name, je.Message)
		case job.ImportProgress:
			u.tasks.update(*je.Task, name)
		}
	case batch.DiskDone:
		oc := e.Outcome
		switch oc.Status {
		case batch.Skipped:
			u.pending--
			delete(u.virt, e.Index)
		case batch.Cancelled:
			if _, started := u.disk[e.Index]; !started {
				u.pending--
			}
			u.virt[e.Index] = u.done[e.Index]
		default:
			u.virt[e.Index] = u.done[e.Index]
		}
		if b := u.disk[e.Index]; b != nil {
			b.done(oc.Status == batch.Done)
			delete(u.disk, e.Index)
		}
		u.line(oc)
	}
	u.updateTotal()
}

// updateTotal sets the total bar: the bytes done of the disks' virtual
// sizes, the disks not yet opened counted at the average size so far.
func (u *batchUI) updateTotal() {
	if u.total == nil {
		return
	}
	var sum, done int64
	for _, v := range u.virt {
		sum += v
	}
	for i, d := range u.done {
		if _, ok := u.virt[i]; ok {
			done += d
		}
	}
	if len(u.virt) > 0 && u.pending > 0 {
		sum += sum / int64(len(u.virt)) * int64(u.pending)
	}
	u.total.b.SetTotal(max(sum, done, 1), false)
	u.total.set(done)
}

// line reports a disk that ended.
func (u *batchUI) line(oc *batch.Outcome) {
	if u.asJSON {
		b, err := json.Marshal(oc)
		if err == nil {
			u.mu.Lock()
			// Straight to out (stdout): bars draw on stderr.
			u.out.Write(append(b, '\n'))
			u.mu.Unlock()
		}
		return
	}
	switch oc.Status {
	case batch.Done:
		u.printf("done       %s -> %s: %s in %.1fs\n", oc.Source, oc.Output, units.Bytes(oc.Bytes), oc.Seconds)
	case batch.Skipped:
		u.printf("skipped    %s -> %s: %s\n", oc.Source, oc.Output, oc.SkippedBecause)
	default:
		u.printf("%-10s %s -> %s: %s\n", oc.Status, oc.Source, oc.Output, oc.Error)
	}
}

func (u *batchUI) finish() {
	u.tasks.finish()
	if u.total != nil {
		u.total.done(true)
	}
	for _, b := range u.disk {
		b.done(false)
	}
	u.wait()
}
