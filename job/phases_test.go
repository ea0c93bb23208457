package job

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// name is a phase's method name ("open").
func name(p phase) string {
	if p == nil {
		return "end"
	}
	n := runtime.FuncForPC(reflect.ValueOf(p).Pointer()).Name()
	n = strings.TrimSuffix(n, "-fm")
	return n[strings.LastIndex(n, ".")+1:]
}

// TestPhasesAlone runs a job to a file one phase at a time, checking what
// each left in the run's state and which it names next.
func TestPhasesAlone(t *testing.T) {
	src, want := randomRaw(t, 8<<20)
	out := filepath.Join(t.TempDir(), "out.raw")
	spec := Spec{Source: src, Output: out, Check: "off", Workers: 2}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	j := &run{s: spec.withDefaults(), res: &Result{}, clients: NewClients(), ownClients: true}
	defer j.close()
	ctx := context.Background()
	step := func(p phase, next string, check func() bool) phase {
		t.Helper()
		got, err := p(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name(p), err)
		}
		if name(got) != next || (check != nil && !check()) {
			t.Fatalf("%s named %s next (want %s), state %+v", name(p), name(got), next, j.res)
		}
		return got
	}
	p := step(j.open, "shape", func() bool { return j.im != nil && j.res.Source.Format == "raw" })
	p = step(p, "reserve", func() bool { return j.diskGB == 40 && j.plan.memory > 0 })
	p = step(p, "preflight", func() bool { return j.buffers != nil && j.held == 0 })
	p = step(p, "checkRules", func() bool { return j.up == nil })
	p = step(p, "openTarget", func() bool { return j.rep == nil })
	p = step(p, "convert", func() bool { return j.target != nil })
	p = step(p, "verifyDigests", func() bool { return j.res.Stats.Done == 8<<20 })
	p = step(p, "commit", nil)
	p = step(p, "importImage", func() bool { return j.target == nil && j.res.OutputBytes == 8<<20 })
	step(p, "end", nil)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the output differs from the source: %v", err)
	}
	if s := j.buffers.Stats(); s.Lent != 0 || s.Peak == 0 {
		t.Fatalf("the pass's buffers: %+v", s)
	}
}
