package main

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"vmimport/jdcloud"
	"vmimport/job"
)

// printImport tells people what an import did, on w (stdout).
func printImport(w io.Writer, r *job.ImportResult) {
	if r == nil || r.TaskID == "" {
		return
	}
	fmt.Fprintf(w, "import submitted: image %s, task %s (region %s)\n", r.ImageID, r.TaskID, r.Region)
	switch {
	case r.Task == nil:
		flags := r.Flags
		if flags == "" {
			flags = "--jdcloud-region " + r.Region
		}
		fmt.Fprintf(w, "follow it with:\n  convert import-status %s --wait %s\n", r.TaskID, flags)
	case r.Task.TaskStatus == jdcloud.TaskFinished:
		fmt.Fprintf(w, "import finished: image %s is ready in region %s (task %s, %s)\n", r.ImageID, r.Region, r.TaskID,
			time.Duration(r.WaitSeconds*float64(time.Second)).Round(time.Second))
	}
}

// taskBars shows import tasks: a bar per task on a terminal (the task's
// status and percent), else a line whenever a task moves.
type taskBars struct {
	*bars
	bar  map[jdcloud.TaskID]*taskBar
	last map[jdcloud.TaskID]string
}

type taskBar struct {
	b      *mpb.Bar
	status atomic.Value // string, read by the bar's decorator
}

func newTaskBars(b *bars) *taskBars {
	return &taskBars{bars: b, bar: map[jdcloud.TaskID]*taskBar{}, last: map[jdcloud.TaskID]string{}}
}

// update shows a task's state; name is what the task imports (may be "").
func (p *taskBars) update(t jdcloud.Task, name string) {
	if p.p == nil {
		line := fmt.Sprintf("%s %d%%", t.TaskStatus, t.Progress)
		if p.last[t.TaskID] == line {
			return
		}
		p.last[t.TaskID] = line
		p.printf("convert: %simport task %s: %s, %d%%\n", prefix(name), t.TaskID, t.TaskStatus, t.Progress)
		return
	}
	tb := p.bar[t.TaskID]
	if tb == nil {
		tb = &taskBar{}
		label := "import task " + string(t.TaskID)
		if name != "" {
			label = name + ": " + label
		}
		tb.b = p.p.AddBar(100,
			mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR),
				decor.Any(func(decor.Statistics) string { s, _ := tb.status.Load().(string); return s }, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)))
		p.bar[t.TaskID] = tb
	}
	tb.status.Store(t.TaskStatus)
	tb.b.SetCurrent(int64(t.Progress))
	if t.Done() {
		if t.TaskStatus == jdcloud.TaskFinished {
			tb.b.SetTotal(-1, true)
		} else {
			tb.b.Abort(false)
		}
	}
}

func prefix(name string) string {
	if name == "" {
		return ""
	}
	return name + ": "
}

// finish ends the bars of tasks that did not end.
func (p *taskBars) finish() {
	for _, tb := range p.bar {
		if !tb.b.Completed() && !tb.b.Aborted() {
			tb.b.Abort(false)
		}
	}
}
