package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"vmimport/internal/units"
)

// Progress on a stderr that is no terminal (a log file, a pipe, a
// service's journal) is told in plain lines, each with the time: no
// cursor escapes. Every --progress-interval a line per running disk (and
// a batch's total), so that a log shows a large disk moving; with
// --progress always (-p) a line at each phase too.

// DefaultProgressInterval is how often the lines come.
const DefaultProgressInterval = 30 * time.Second

// stamp is the time format of the lines, as a worker's log has it.
const stamp = "2006-01-02T15:04:05.000"

// registerProgressInterval adds --progress-interval.
func registerProgressInterval(fs *pflag.FlagSet, p *time.Duration) {
	fs.DurationVar(p, "progress-interval", DefaultProgressInterval, "when stderr is no terminal (a log): a progress line with the time, the phase, the bytes, the rate and the time left every this long (0: none)")
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lineMode reports whether progress goes in lines on w: it is no terminal
// and progress is not off.
func lineMode(mode string, w io.Writer) bool { return mode != "never" && !isTerminal(w) }

// lineOptions say how progress lines come: every Every (0: none), and at
// each phase with Phases.
type lineOptions struct {
	Every  time.Duration
	Phases bool
}

// linesFor are the line options of --progress mode on w.
func linesFor(mode string, w io.Writer, every time.Duration) lineOptions {
	if !lineMode(mode, w) {
		return lineOptions{}
	}
	return lineOptions{Every: every, Phases: mode == "always"}
}

// logLine writes a progress line with the time.
func (b *bars) logLine(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(b.w, "%s convert: %s\n", time.Now().Format(stamp), safeLines(s))
}

// startLines writes the lines report gives every `every` until wait.
func (b *bars) startLines(every time.Duration, report func(now time.Time) []string) {
	if every <= 0 {
		return
	}
	b.lstop = make(chan struct{})
	b.lstopped.Add(1)
	go func() {
		defer b.lstopped.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				for _, l := range report(now) {
					b.logLine(l)
				}
			case <-b.lstop:
				return
			}
		}
	}()
}

// stopLines stops the lines (wait calls it).
func (b *bars) stopLines() {
	if b.lstop != nil {
		close(b.lstop)
		b.lstopped.Wait()
		b.lstop = nil
	}
}

// meter is where one disk stands, for its lines: the phase, the bytes done
// of the total, since when.
type meter struct {
	name        string
	phase       string
	moving      bool // the phase moves bytes: a rate and the time left
	done, total int64
	since       time.Time
	base        int64 // done when the phase began
}

func (m *meter) setPhase(p string, moving bool) {
	m.phase, m.moving, m.since, m.base = p, moving, time.Now(), m.done
}

// progress is done of total bytes of a phase that moves bytes of its own
// (the upload's last parts, its read-back).
func (m *meter) progress(done, total int64) {
	if !m.moving {
		m.moving, m.base, m.since = true, done, time.Now()
	}
	m.done, m.total = done, total
}

// line tells where the disk stands: "web01.vmdk: converting 1.2 GiB /
// 40.0 GiB (3%), 180.0 MiB/s, 3m34s left", or the time spent in a phase
// that moves no bytes.
func (m *meter) line(now time.Time) string {
	s := m.name + ": " + m.phase
	if m.phase == "" {
		s = m.name + ": starting"
	}
	spent := now.Sub(m.since)
	if !m.moving || m.total <= 0 {
		if spent < time.Minute {
			return s + fmt.Sprintf(" (for %.1fs)", spent.Seconds())
		}
		return s + fmt.Sprintf(" (for %s)", spent.Truncate(time.Second))
	}
	s += fmt.Sprintf(" %s / %s (%d%%)", units.Bytes(m.done), units.Bytes(m.total), m.done*100/m.total)
	if r := units.Rate(m.done-m.base, spent.Seconds()); r != "" {
		s += ", " + r
	}
	if moved := m.done - m.base; moved > 0 && spent >= time.Second && m.total > m.done {
		if left := time.Duration(float64(spent) * float64(m.total-m.done) / float64(moved)).Round(time.Second); left > 0 {
			s += ", " + left.String() + " left"
		}
	}
	return s
}

// diskLabel is how a disk is called in bars and lines: the base name of
// its file, or of a URL's path (never its query, which may hold a
// signature).
func diskLabel(src string) string {
	if strings.Contains(src, "://") {
		if u, err := url.Parse(src); err == nil {
			if b := path.Base(u.Path); b != "." && b != "/" {
				return b
			}
			return u.Host
		}
		return "the source"
	}
	return filepath.Base(src)
}

// lineState guards the meters a UI keeps for its lines: events come from
// the job, the lines from their ticker.
type lineState struct{ sync.Mutex }
