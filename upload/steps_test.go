package upload

import (
	"context"
	"sync"
	"testing"
)

// TestCommitReportsSteps: with Options.Steps set, Commit reports its steps
// while the part senders report the parts they store, from their own
// goroutines (run under -race: the step and its total are shared).
func TestCommitReportsSteps(t *testing.T) {
	e := newEnv(t, false)
	var mu sync.Mutex
	var seen []StepProgress
	ops := []op{{n: 23 * mib, seed: 21}, {zero: true, n: 3 * mib}, {n: 4 * mib, seed: 22}}
	tg := e.start("steps.raw", Options{
		SizeHint: patternSize(ops), PartSize: 5 * mib, Concurrency: 4, Verify: true,
		Steps: func(p StepProgress) { mu.Lock(); seen = append(seen, p); mu.Unlock() },
	})
	replay(t, tg, ops)
	if err := tg.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	steps := map[Step]StepProgress{}
	for _, p := range seen {
		if p.Done > p.Total {
			t.Errorf("%s: %d of %d", p.Step, p.Done, p.Total)
		}
		steps[p.Step] = p
	}
	for _, s := range []Step{StepUploading, StepCompleting, StepChecking, StepVerifying} {
		if _, ok := steps[s]; !ok {
			t.Errorf("step %q never reported (saw %v)", s, seen)
		}
	}
	if v := steps[StepVerifying]; v.Done != v.Total || v.Total != patternSize(ops) {
		t.Errorf("verifying ended at %d of %d, want %d", v.Done, v.Total, patternSize(ops))
	}
}
