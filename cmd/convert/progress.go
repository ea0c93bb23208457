package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"vmimport/batch"
	"vmimport/internal/units"
	"vmimport/job"
)

// showProgress decides whether bars are drawn on w: on a terminal, unless
// progress is off (elsewhere progress goes in lines: progress_lines.go).
func showProgress(mode string, w io.Writer) bool {
	return mode != "never" && isTerminal(w)
}

// bars draws progress bars on a terminal (github.com/vbauerster/mpb/v8) and
// prints lines above them; without bars it prints the lines as they come.
type bars struct {
	w  io.Writer
	p  *mpb.Progress // nil: no bars
	mu sync.Mutex    // serializes lines written without bars

	// refresh asks for a frame: every refreshEvery, and at once when a
	// phase changes, so that every phase is drawn at least once however
	// short it is (the decorators take the phases in turn, bar.nextPhase).
	refresh chan any
	stop    chan struct{}
	stopped sync.WaitGroup

	// The progress lines, without a terminal (startLines).
	lstop    chan struct{}
	lstopped sync.WaitGroup
}

const refreshEvery = 150 * time.Millisecond

func newBars(mode string, w io.Writer) *bars {
	b := &bars{w: w}
	if showProgress(mode, w) {
		b.refresh = make(chan any, 1)
		b.stop = make(chan struct{})
		b.p = mpb.New(mpb.WithOutput(w), mpb.WithManualRefresh(b.refresh), mpb.ForceTTY())
		b.stopped.Add(1)
		go func() {
			defer b.stopped.Done()
			t := time.NewTicker(refreshEvery)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					b.redraw()
				case <-b.stop:
					return
				}
			}
		}()
	}
	return b
}

// redraw asks for a frame soon (one pending request is enough).
func (b *bars) redraw() {
	if b.refresh == nil {
		return
	}
	select {
	case b.refresh <- time.Now():
	default:
	}
}

// printf writes a line above the bars.
func (b *bars) printf(format string, args ...any) {
	line := safeLines(fmt.Sprintf(format, args...))
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
// and the time left (or, in a phase that moves no bytes, the time spent in
// it).
type bar struct {
	owner     *bars
	b         *mpb.Bar
	transient bool // removed when it ends

	mu     sync.Mutex
	phases []string // phases not drawn yet, oldest first
	shown  string   // the phase last drawn
	moving bool     // the phase moves bytes: show a rate and the time left
	since  time.Time
	base   int64 // bytes done when the phase began
}

// add adds a bar; nil without bars. A transient bar is removed when it
// ends. Its total is set later (setTotal): a bar created with a total
// would complete by itself when it reaches it, and stop showing the phases
// that follow.
func (b *bars) add(name string, priority int, transient bool) *bar {
	if b.p == nil {
		return nil
	}
	br := &bar{owner: b, transient: transient, since: time.Now()}
	br.b = b.p.New(0, mpb.BarStyle().Lbound("[").Rbound("]"),
		mpb.BarPriority(priority),
		mpb.BarOptional(mpb.BarRemoveOnComplete(), transient),
		mpb.PrependDecorators(
			decor.Name(name, decor.WCSyncSpaceR),
			decor.Any(func(decor.Statistics) string { return br.nextPhase() }, decor.WCSyncSpaceR),
		),
		mpb.AppendDecorators(
			decor.Any(counters, decor.WCSyncSpace),
			decor.Any(br.rate, decor.WCSyncSpace),
			decor.Any(br.timeLeft, decor.WCSyncSpace),
		),
	)
	return br
}

// counters is the bytes done of the total, in binary units ("" until the
// total is known).
func counters(st decor.Statistics) string {
	if st.Total <= 0 {
		return ""
	}
	return units.Bytes(st.Current) + " / " + units.Bytes(st.Total)
}

// nextPhase is the phase a frame shows: the oldest one not drawn yet, so
// that a phase of a few milliseconds still gets its frame.
func (br *bar) nextPhase() string {
	br.mu.Lock()
	defer br.mu.Unlock()
	if len(br.phases) > 0 {
		br.shown, br.phases = br.phases[0], br.phases[1:]
	}
	return br.shown
}

// rate is the phase's bytes per second, in binary units, once it has run
// long enough to tell.
func (br *bar) rate(st decor.Statistics) string {
	br.mu.Lock()
	defer br.mu.Unlock()
	if !br.moving || st.Completed || st.Aborted {
		return ""
	}
	return units.Rate(st.Current-br.base, time.Since(br.since).Seconds())
}

// timeLeft is the time left at the phase's rate; in a phase that moves no
// bytes (completing the upload, waiting), the time spent in it.
func (br *bar) timeLeft(st decor.Statistics) string {
	br.mu.Lock()
	defer br.mu.Unlock()
	if st.Completed || st.Aborted {
		return ""
	}
	spent := time.Since(br.since)
	if !br.moving {
		if spent < time.Second {
			return ""
		}
		return spent.Truncate(time.Second).String()
	}
	// Not before a second: an early sample makes wild guesses.
	done := st.Current - br.base
	if done <= 0 || spent < time.Second || st.Total <= st.Current {
		return ""
	}
	left := time.Duration(float64(spent) * float64(st.Total-st.Current) / float64(done))
	return left.Round(time.Second).String() + " left"
}

// setPhase starts phase p; moving says it moves bytes (the bar's rate and
// time left apply to it).
func (br *bar) setPhase(p string, moving bool) {
	if br == nil {
		return
	}
	br.mu.Lock()
	br.phases = append(br.phases, p)
	br.moving = moving
	br.since = time.Now()
	br.base = br.b.Current()
	br.mu.Unlock()
	br.owner.redraw()
}

// progress shows done of total bytes of a phase that moves bytes of its
// own (the upload's last parts, its read-back): the bar starts over.
func (br *bar) progress(done, total int64) {
	if br == nil {
		return
	}
	br.mu.Lock()
	if !br.moving {
		br.moving = true
		br.base = done
		br.since = time.Now()
	}
	br.mu.Unlock()
	br.b.SetTotal(total, false)
	br.b.SetCurrent(done)
}

func (br *bar) setTotal(n int64) {
	if br != nil {
		br.b.SetTotal(n, false)
	}
}

func (br *bar) set(n int64) {
	if br != nil {
		br.b.SetCurrent(n)
	}
}

// done ends the bar: complete, or aborted where it stands; its last frame
// shows the last phase, after every earlier one had its frame.
func (br *bar) done(ok bool) {
	if br == nil {
		return
	}
	for range 8 {
		br.mu.Lock()
		left := len(br.phases)
		br.mu.Unlock()
		if left == 0 {
			break
		}
		br.owner.redraw()
		time.Sleep(20 * time.Millisecond)
	}
	if ok {
		br.b.SetTotal(-1, true)
	} else {
		br.b.Abort(br.transient)
	}
}

// wait waits for the bars to draw their last state (and stops the lines).
func (b *bars) wait() {
	b.stopLines()
	if b.p != nil {
		close(b.stop)
		b.stopped.Wait()
		b.p.Wait()
	}
}

// movesBytes tells the phases whose bytes the bar counts: the pass, and the
// steps of an upload that report their own (PhaseProgress).
func movesBytes(p job.Phase) bool {
	return p == job.Reading
}

// runUI shows one job: a bar with its phase, and its warnings, notices
// and check findings as lines above it; without a terminal, lines.
type runUI struct {
	*bars
	asJSON bool
	quiet  bool
	bar    *bar
	phase  job.Phase
	tasks  *taskBars

	lo    lineOptions
	lmu   lineState
	meter meter
}

// newRunUI shows the job of the disk name on w.
func newRunUI(mode string, w io.Writer, asJSON, quiet bool, name string, lo lineOptions) *runUI {
	u := &runUI{bars: newBars(mode, w), asJSON: asJSON, quiet: quiet, lo: lo, meter: meter{name: name, since: time.Now()}}
	u.tasks = newTaskBars(u.bars)
	u.bar = u.add("", 0, false)
	u.startLines(lo.Every, func(now time.Time) []string {
		u.lmu.Lock()
		defer u.lmu.Unlock()
		return []string{u.meter.line(now)}
	})
	return u
}

// track keeps the meter of the lines.
func (u *runUI) track(e job.Event) {
	if u.lo == (lineOptions{}) {
		return
	}
	u.lmu.Lock()
	m := &u.meter
	switch e.Kind {
	case job.Started:
		m.total = e.Info.VirtualSize
	case job.PhaseChanged:
		m.setPhase(string(e.Phase), movesBytes(e.Phase))
	case job.Progress:
		m.done, m.total = e.Stats.Done, e.Stats.Size
	case job.PhaseProgress:
		if string(e.Phase) == m.phase {
			m.progress(e.Done, e.Total)
		}
	}
	u.lmu.Unlock()
	if e.Kind == job.PhaseChanged && u.lo.Phases {
		u.logLine(m.name + ": " + string(e.Phase))
	}
}

func (u *runUI) event(e job.Event) {
	u.track(e)
	switch e.Kind {
	case job.Started:
		u.bar.setTotal(e.Info.VirtualSize)
	case job.PhaseChanged:
		u.phase = e.Phase
		u.bar.setPhase(string(e.Phase), movesBytes(e.Phase))
	case job.Progress:
		u.bar.set(e.Stats.Done)
	case job.PhaseProgress:
		if e.Phase == u.phase {
			u.bar.progress(e.Done, e.Total)
		}
	case job.Checked:
		if !u.asJSON && !u.quiet {
			// The findings go into the JSON summary; stderr may be
			// where the summary goes, so it stays clean.
			u.printf("%s", checkText(e.Check))
		}
	case job.Warning:
		u.printf("convert: warning: %s\n", e.Message)
	case job.Notice:
		if !u.quiet {
			u.printf("convert: %s\n", e.Message)
		}
	case job.ImportProgress:
		u.tasks.update(*e.Task, "")
	}
}

func (u *runUI) finish(ok bool) {
	if u.bar != nil {
		if ok {
			u.bar.setPhase("done", false)
		}
		u.bar.done(ok)
	}
	u.tasks.finish()
	u.wait()
}

// batchUI shows a batch: a bar per running disk and a total, a line per
// disk as it ends (a JSON object each with --json, on out); without a
// terminal, progress lines for the total and the running disks.
type batchUI struct {
	*bars
	tasks  *taskBars
	out    io.Writer
	asJSON bool
	n      int // disks in the batch

	total *bar
	disk  map[int]*bar
	phase map[int]job.Phase

	// What is known of each disk, for the total and the lines (guarded
	// by lmu: the lines read it from their ticker).
	lo     lineOptions
	lmu    lineState
	meters map[int]*meter // the running disks
	size   map[int]int64  // virtual size of the disks that opened
	done   map[int]int64  // bytes done per disk
	ended  map[int]batch.Status
	start  time.Time
}

func newBatchUI(mode string, w, out io.Writer, asJSON bool, n int, lo lineOptions) *batchUI {
	u := &batchUI{bars: newBars(mode, w), out: out, asJSON: asJSON, n: n, lo: lo, start: time.Now(),
		disk: map[int]*bar{}, phase: map[int]job.Phase{},
		meters: map[int]*meter{}, size: map[int]int64{}, done: map[int]int64{}, ended: map[int]batch.Status{}}
	u.total = u.add("all "+disks(n), 1<<30, false)
	u.total.setPhase("", true)
	u.tasks = newTaskBars(u.bars)
	u.startLines(lo.Every, u.report)
	return u
}

// name is how a disk is called in lines and bars.
func diskName(it *batch.Item) string {
	return diskLabel(it.Spec.Source)
}

func (u *batchUI) event(e batch.Event) {
	name := diskName(e.Item)
	u.track(e, name)
	switch e.Kind {
	case batch.DiskStarted:
		u.disk[e.Index] = u.add(name, e.Index, true)
	case batch.DiskEvent:
		b := u.disk[e.Index]
		switch je := e.Job; je.Kind {
		case job.Started:
			b.setTotal(je.Info.VirtualSize)
		case job.PhaseChanged:
			u.phase[e.Index] = je.Phase
			b.setPhase(string(je.Phase), movesBytes(je.Phase))
		case job.Progress:
			b.set(je.Stats.Done)
		case job.PhaseProgress:
			if je.Phase == u.phase[e.Index] {
				b.progress(je.Done, je.Total)
			}
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
		if b := u.disk[e.Index]; b != nil {
			b.done(e.Outcome.Status == batch.Done)
			delete(u.disk, e.Index)
		}
		u.line(e.Outcome)
	}
	u.updateTotal()
}

// track keeps what the total and the lines know of the disks.
func (u *batchUI) track(e batch.Event, name string) {
	u.lmu.Lock()
	var phaseLine string
	switch e.Kind {
	case batch.DiskStarted:
		u.meters[e.Index] = &meter{name: name, since: time.Now()}
	case batch.DiskEvent:
		m := u.meters[e.Index]
		if m == nil {
			m = &meter{name: name, since: time.Now()}
			u.meters[e.Index] = m
		}
		switch je := e.Job; je.Kind {
		case job.Started:
			u.size[e.Index] = je.Info.VirtualSize
			m.total = je.Info.VirtualSize
		case job.PhaseChanged:
			m.setPhase(string(je.Phase), movesBytes(je.Phase))
			phaseLine = name + ": " + string(je.Phase)
		case job.Progress:
			u.done[e.Index] = je.Stats.Done
			m.done, m.total = je.Stats.Done, je.Stats.Size
		case job.PhaseProgress:
			if string(je.Phase) == m.phase {
				m.progress(je.Done, je.Total)
			}
		}
	case batch.DiskDone:
		st := e.Outcome.Status
		u.ended[e.Index] = st
		if v, ok := u.size[e.Index]; ok && st == batch.Done {
			u.done[e.Index] = v
		}
		delete(u.meters, e.Index)
	}
	u.lmu.Unlock()
	if !u.lo.Phases {
		return
	}
	switch {
	case phaseLine != "":
		u.logLine(phaseLine)
	case e.Kind == batch.DiskStarted || e.Kind == batch.DiskDone:
		// The total as a disk starts or ends: where it would move.
		u.logLine(u.report(time.Now())[0])
	}
}

// totals are the bytes of the batch and those done: the disks that opened
// by their virtual size (one that failed or was cancelled by what it did),
// those not opened yet at the average size of those that did, skipped
// disks not at all. known: a disk opened, so there is a size to tell.
// With disks of one size the total never moves; it moves only as disks of
// other sizes open.
func (u *batchUI) totals() (total, done int64, known bool) {
	var sizes int64
	for i, v := range u.size {
		sizes += v
		if st, ok := u.ended[i]; ok && st != batch.Done {
			total += u.done[i]
		} else {
			total += v
		}
		done += min(u.done[i], v)
	}
	unknown := u.n - len(u.size)
	for i := range u.ended {
		if _, opened := u.size[i]; !opened {
			unknown--
		}
	}
	if len(u.size) > 0 && unknown > 0 {
		total += sizes / int64(len(u.size)) * int64(unknown)
	}
	return total, done, len(u.size) > 0
}

// updateTotal sets the total bar.
func (u *batchUI) updateTotal() {
	if u.total == nil {
		return
	}
	u.lmu.Lock()
	total, done, _ := u.totals()
	u.lmu.Unlock()
	u.total.setTotal(max(total, done, 1))
	u.total.set(done)
}

// report is the batch's progress lines: the total, then each running disk.
func (u *batchUI) report(now time.Time) []string {
	u.lmu.Lock()
	defer u.lmu.Unlock()
	total, done, known := u.totals()
	head := "all " + disks(u.n) + ": "
	if known {
		head += fmt.Sprintf("%s / %s (%d%%)", units.Bytes(done), units.Bytes(total), done*100/max(total, 1))
		spent := now.Sub(u.start)
		if r := units.Rate(done, spent.Seconds()); r != "" {
			head += ", " + r
		}
		if done > 0 && total > done && spent >= time.Second {
			head += ", " + time.Duration(float64(spent)*float64(total-done)/float64(done)).Round(time.Second).String() + " left"
		}
		head += "; "
	}
	head += fmt.Sprintf("%d running, %d ended, %d waiting", len(u.meters), len(u.ended), u.n-len(u.meters)-len(u.ended))
	lines := []string{head}
	idx := make([]int, 0, len(u.meters))
	for i := range u.meters {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		lines = append(lines, u.meters[i].line(now))
	}
	return lines
}

// line reports a disk that ended.
func (u *batchUI) line(oc *batch.Outcome) {
	if u.asJSON {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false) // presigned URLs keep their &
		if e.Encode(oc) == nil {
			u.mu.Lock()
			// Straight to out (stdout): bars draw on stderr.
			u.out.Write(b.Bytes())
			u.mu.Unlock()
		}
		return
	}
	switch oc.Status {
	case batch.Done:
		u.printf("done       %s -> %s: %s in %.1fs\n", oc.Source, oc.Output, units.Bytes(oc.Bytes), oc.Seconds)
	case batch.Skipped:
		u.printf("skipped    %s -> %s: %s\n", oc.Source, oc.Output, oc.SkippedBecause)
	case batch.Planned:
		u.printf("planned    %s -> %s: %s\n", oc.Source, oc.Output, planLine(oc.Plan))
	default:
		u.printf("%-10s %s -> %s: %s\n", oc.Status, oc.Source, oc.Output, plain(oc.Error))
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
