package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Sample is one timed run of a command.
type Sample struct {
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"` // user + system
	MaxRSS     int64   `json:"max_rss_bytes"`
	// Link cases: what crossed the shaped loopback during the run (both
	// directions), and the CPU the S3 server spent meanwhile.
	WireBytes        int64   `json:"wire_bytes,omitempty"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds,omitempty"`
}

// Run times one command to completion and reads its resource usage.
func Run(ctx context.Context, argv []string) (Sample, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A peer under sh -c runs in its own process group, so that a
	// cancelled run (a time limit) stops all of it, and Wait does not
	// wait for a grandchild holding the output pipe.
	ownGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Sample{}, err
	}
	// rusage's maxrss would report the Go parent's size: a child made by
	// fork+exec keeps its parent's high-water mark. The exec'd process's
	// own VmHWM in /proc is right, so sample it while the child runs.
	done := make(chan struct{})
	hwm := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, treeHWM(cmd.Process.Pid, 0))
			select {
			case <-done:
				hwm <- peak
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)
	close(done)
	peak := <-hwm
	if err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 400 {
			msg = msg[len(msg)-400:]
		}
		return Sample{}, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, msg)
	}
	s := Sample{Seconds: wall.Seconds()}
	s.CPUSeconds = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	s.MaxRSS = peak
	return s, nil
}

// treeHWM is the largest peak RSS among a process and its descendants (a
// peer run through sh -c is measured by its qemu-img, not by the shell).
func treeHWM(pid, depth int) int64 {
	peak := vmHWM(pid)
	if depth > 4 {
		return peak
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return peak
	}
	for _, f := range strings.Fields(string(b)) {
		var child int
		if _, err := fmt.Sscanf(f, "%d", &child); err == nil {
			peak = max(peak, treeHWM(child, depth+1))
		}
	}
	return peak
}

// vmHWM reads a process's peak resident set size from /proc, 0 if gone
// (or where there is no /proc: the suite runs on Linux).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb * 1024
		}
	}
	return 0
}

// Summary is the median of a set of samples.
type Summary struct {
	Seconds          float64   `json:"seconds"`
	CPUSeconds       float64   `json:"cpu_seconds"`
	MaxRSS           int64     `json:"max_rss_bytes"`
	Runs             []float64 `json:"runs_seconds"`
	WireBytes        int64     `json:"wire_bytes,omitempty"`
	ServerCPUSeconds float64   `json:"server_cpu_seconds,omitempty"`
}

// Summarize takes the median time, CPU, server CPU and bytes on the wire,
// and the largest RSS.
func Summarize(samples []Sample) Summary {
	var s Summary
	var cpu, wire, server []float64
	for _, x := range samples {
		s.Runs = append(s.Runs, x.Seconds)
		cpu = append(cpu, x.CPUSeconds)
		wire = append(wire, float64(x.WireBytes))
		server = append(server, x.ServerCPUSeconds)
		s.MaxRSS = max(s.MaxRSS, x.MaxRSS)
	}
	s.Seconds = Median(s.Runs)
	s.CPUSeconds = Median(cpu)
	s.WireBytes = int64(Median(wire))
	s.ServerCPUSeconds = Median(server)
	return s
}

// MinMax of xs; 0, 0 for none.
func MinMax(xs []float64) (lo, hi float64) {
	for i, x := range xs {
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}

// RatioSpread is the smallest and largest of the per-round ratios
// peer[i] / ours[i]: the runs are interleaved in rounds, so the runs of one
// index ran back to back on the same machine state. 0, 0 without runs.
func RatioSpread(ours, peer []float64) (lo, hi float64) {
	var rs []float64
	for i := range min(len(ours), len(peer)) {
		if ours[i] > 0 {
			rs = append(rs, peer[i]/ours[i])
		}
	}
	return MinMax(rs)
}

// Median of xs; 0 for none. For an even count, the mean of the middle two.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Ratio is how many times faster ours is than the peer: peer / ours.
func Ratio(ours, peer float64) float64 {
	if ours <= 0 {
		return 0
	}
	return peer / ours
}

// Interleave runs ours and the peer runs times each, alternating which goes
// first, so that drifts of a noisy machine fall on both alike. prepare runs
// before each command (to remove the previous output).
func Interleave(ctx context.Context, runs int, ours, peer []string, prepare func()) (o, p []Sample, err error) {
	one := func(argv []string, into *[]Sample) error {
		if prepare != nil {
			prepare()
		}
		s, err := Run(ctx, argv)
		if err != nil {
			return err
		}
		*into = append(*into, s)
		return nil
	}
	for i := range runs {
		first, second := ours, peer
		fo, so := &o, &p
		if i%2 == 1 {
			first, second, fo, so = peer, ours, &p, &o
		}
		if err := one(first, fo); err != nil {
			return o, p, err
		}
		if err := one(second, so); err != nil {
			return o, p, err
		}
	}
	return o, p, nil
}
