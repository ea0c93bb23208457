package upload

import (
	"io"
	"sync/atomic"
)

// Step names a stretch of Commit, for progress displays: once the pass has
// handed over its last byte, Commit still waits for the parts in flight,
// completes the upload, checks the object and, with Verify, reads it back.
// Without these a bar would sit at 100% in silence meanwhile.
type Step string

// The steps of Commit, in order; a commit may skip some.
const (
	StepUploading  Step = "uploading the last parts" // the parts still in flight
	StepCompleting Step = "completing the upload"    // CompleteMultipartUpload
	StepChecking   Step = "checking the object"      // HeadObject: size and ETag
	StepVerifying  Step = "verifying the object"     // Verify: every part read back
)

// StepProgress is how far a step got: Done of Total bytes (parts stored in
// the upload while StepUploading, parts read back while StepVerifying; 0
// of 0 for the steps that are one request).
type StepProgress struct {
	Step        Step
	Done, Total int64
}

// stepper reports steps to Options.Steps: from the goroutine calling
// Commit and, while parts land or are read back, from the workers. The
// step and its total change together (one pointer), so that a worker never
// reads one step's total with another's name.
type stepper struct {
	f    func(StepProgress)
	cur  atomic.Pointer[stepNow]
	done atomic.Int64
}

// stepNow is the step under way and its total.
type stepNow struct {
	step  Step
	total int64
}

// begin starts step s of total bytes, of which done are done already.
func (s *stepper) begin(step Step, done, total int64) {
	if s.f == nil {
		return
	}
	s.done.Store(done)
	s.cur.Store(&stepNow{step: step, total: total})
	s.f(StepProgress{Step: step, Done: done, Total: total})
}

// add counts n more bytes of step, if it is the current one.
func (s *stepper) add(step Step, n int64) {
	if s.f == nil {
		return
	}
	cur := s.cur.Load()
	if cur == nil || cur.step != step {
		return
	}
	s.f(StepProgress{Step: step, Done: s.done.Add(n), Total: cur.total})
}

// reader counts what is read from r as progress of step.
func (s *stepper) reader(step Step, r io.Reader) io.Reader {
	if s.f == nil {
		return r
	}
	return stepReader{r: r, s: s, step: step}
}

type stepReader struct {
	r    io.Reader
	s    *stepper
	step Step
}

func (r stepReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.s.add(r.step, int64(n))
	}
	return n, err
}
