package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 1, 1, 1, 10}, 1},
	}
	for _, c := range cases {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 {
		t.Error("Median sorted its argument in place")
	}
}

func TestSummarizeAndRatio(t *testing.T) {
	s := Summarize([]Sample{{Seconds: 2, CPUSeconds: 3, MaxRSS: 10}, {Seconds: 4, CPUSeconds: 1, MaxRSS: 30}, {Seconds: 3, CPUSeconds: 2, MaxRSS: 20}})
	if s.Seconds != 3 || s.CPUSeconds != 2 || s.MaxRSS != 30 || len(s.Runs) != 3 {
		t.Fatalf("Summarize = %+v", s)
	}
	if r := Ratio(2, 5); math.Abs(r-2.5) > 1e-9 {
		t.Errorf("Ratio(2, 5) = %v", r)
	}
	if r := Ratio(0, 5); r != 0 {
		t.Errorf("Ratio(0, 5) = %v", r)
	}
}

func TestInterleaveAlternates(t *testing.T) {
	var order []string
	o, p, err := Interleave(context.Background(), 4, []string{"true"}, []string{"true"}, func() { order = append(order, "x") })
	if err != nil || len(o) != 4 || len(p) != 4 || len(order) != 8 {
		t.Fatalf("Interleave: %d, %d, %v, %d prepares", len(o), len(p), err, len(order))
	}
	// `true` may end before the first /proc sample: RSS is checked by
	// TestRunMeasuresTheChildsOwnRSS with a child that lives long enough.
	if o[0].Seconds <= 0 {
		t.Errorf("sample without a time: %+v", o[0])
	}
	if _, _, err := Interleave(context.Background(), 1, []string{"false"}, []string{"true"}, nil); err == nil {
		t.Error("a failing command is not reported")
	}
}

func TestReportWrite(t *testing.T) {
	r := &Report{Date: "2026-11-27T08:00:00Z", Machine: Machine{Host: "ci/box", CPUs: 2}, Command: "convert bench --suite",
		Cases: []Case{
			{Name: "qcow2 -> raw (50%)", Peer: "qemu-img", VirtualSize: 8 << 30, DataBytes: 4 << 30, Ours: Summary{Seconds: 2}, Theirs: Summary{Seconds: 3}, Ratio: 1.5},
			{Name: "vhdx -> raw (50%)", Peer: "qemu-img", Skipped: "VHDX input is not supported yet"},
		},
		Scaling: []Scaling{{Case: "x", Seconds: map[string]float64{"1": 4, "2": 2.2}}}}
	dir, err := r.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != "2026-11-27T0800-ci_box-2cpu" {
		t.Errorf("folder %s", dir)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"**1.50x**", "skipped: VHDX", "4295 / 2147", "1 workers 4.00s", "Reproduce"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "ratios.svg"))
	if !strings.Contains(string(svg), "1.50x") || strings.Contains(string(svg), "VHDX") {
		t.Errorf("ratios.svg:\n%s", svg)
	}
	var back Report
	js, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if err := json.Unmarshal(js, &back); err != nil || len(back.Cases) != 2 {
		t.Errorf("results.json: %v", err)
	}
}

func TestRunMeasuresTheChildsOwnRSS(t *testing.T) {
	// A 64 MiB parent allocation must not show up in a small child's RSS.
	ballast := make([]byte, 64<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	s, err := Run(context.Background(), []string{"sleep", "0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if s.MaxRSS <= 0 || s.MaxRSS > 32<<20 {
		t.Errorf("sleep's peak RSS measured as %d bytes", s.MaxRSS)
	}
	_ = ballast[len(ballast)-1]
}

func TestRunMeasuresChildrenOfAShell(t *testing.T) {
	// A child that touches 48 MiB under sh -c: the tree's peak must show it.
	s, err := Run(context.Background(), []string{"sh", "-c", "head -c 50331648 /dev/zero | (sleep 0.3; tail -c 1 >/dev/null)"})
	if err != nil {
		t.Fatal(err)
	}
	_ = s // tail streams; the test only checks sampling does not fail on a tree
	if s.MaxRSS <= 0 {
		t.Errorf("no RSS sampled for a shell pipeline: %+v", s)
	}
}

func TestSkipReasonHidesCommandsAndPaths(t *testing.T) {
	argv := []string{"sh", "-c", "qemu-img convert /scratch/a /scratch/b && aws s3 cp /scratch/b s3://x/y"}
	err := fmt.Errorf("%s: exit status 1: upload failed: /scratch/b to s3://x/y No space left\nmore", strings.Join(argv, " "))
	got := skipReason(err, "/scratch", []string{"convert"}, argv)
	if want := "sh: exit status 1: upload failed: DIR/b to s3://x/y No space left"; got != want {
		t.Errorf("skipReason = %q, want %q", got, want)
	}
	if got := skipReason(fmt.Errorf("no such file"), "", argv); got != "no such file" {
		t.Errorf("skipReason = %q", got)
	}
}

func TestRatioSpreadPairsRounds(t *testing.T) {
	lo, hi := RatioSpread([]float64{10, 20, 5}, []float64{30, 20, 10, 99})
	if lo != 1 || hi != 3 {
		t.Errorf("RatioSpread = %v, %v, want 1, 3", lo, hi)
	}
	if lo, hi := RatioSpread(nil, []float64{1}); lo != 0 || hi != 0 {
		t.Errorf("RatioSpread without runs = %v, %v", lo, hi)
	}
	s := Summarize([]Sample{{Seconds: 1, WireBytes: 100, ServerCPUSeconds: 2}, {Seconds: 2, WireBytes: 300, ServerCPUSeconds: 4}, {Seconds: 3, WireBytes: 200, ServerCPUSeconds: 3}})
	if s.WireBytes != 200 || s.ServerCPUSeconds != 3 {
		t.Errorf("Summarize wire/server = %d, %v", s.WireBytes, s.ServerCPUSeconds)
	}
}
