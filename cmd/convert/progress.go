package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"vmimport/stream"
)

// progress shows a bar with rate and ETA on stderr, or nothing.
type progress struct {
	bar *progressbar.ProgressBar
	w   io.Writer
}

func newProgress(mode string, w io.Writer, size int64) *progress {
	show := mode == "always"
	if mode == "auto" {
		if f, ok := w.(*os.File); ok {
			show = term.IsTerminal(int(f.Fd()))
		}
	}
	if !show {
		return &progress{}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("converting"),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true),
	)
	return &progress{bar: bar, w: w}
}

func (p *progress) update(st stream.Stats) {
	if p.bar != nil {
		p.bar.Set64(st.Done)
	}
}

func (p *progress) finish(ok bool) {
	if p.bar == nil {
		return
	}
	if ok {
		p.bar.Finish()
	} else {
		p.bar.Exit()
	}
	io.WriteString(p.w, "\n")
}
