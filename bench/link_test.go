package bench

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseLinks(t *testing.T) {
	links, err := ParseLinks("1gbit, 100mbit,,2.5Gbit")
	if err != nil {
		t.Fatal(err)
	}
	want := []Link{{"1gbit", 1e9}, {"100mbit", 1e8}, {"2.5gbit", 2.5e9}}
	if len(links) != len(want) {
		t.Fatalf("ParseLinks = %+v", links)
	}
	for i := range want {
		if links[i] != want[i] {
			t.Errorf("link %d = %+v, want %+v", i, links[i], want[i])
		}
	}
	if links[1].BytesPerSec() != 12.5e6 {
		t.Errorf("100mbit = %v bytes/s", links[1].BytesPerSec())
	}
	for _, bad := range []string{"fast", "100mb", "100kbit", "1gbps"} {
		if _, err := ParseLinks(bad); err == nil {
			t.Errorf("ParseLinks(%q) took it", bad)
		}
	}
	if links, err := ParseLinks(""); err != nil || len(links) != 0 {
		t.Errorf("ParseLinks(\"\") = %v, %v", links, err)
	}
}

func TestParseTCSent(t *testing.T) {
	out := `qdisc tbf 8001: root refcnt 2 rate 1Gbit burst 256Kb lat 50ms 
 Sent 2154938112 bytes 53112 pkt (dropped 0, overlimits 41234 requeues 0) 
 backlog 0b 0p requeues 0
`
	n, err := ParseTCSent(out)
	if err != nil || n != 2154938112 {
		t.Errorf("ParseTCSent = %d, %v", n, err)
	}
	if _, err := ParseTCSent("Cannot find device \"lo0\"\n"); err == nil {
		t.Error("no counter taken as one")
	}
}

func TestParseProcCPU(t *testing.T) {
	// A command name with a space and a parenthesis, 250 + 50 ticks.
	stat := "14134 (versity gw)) S 1 14134 14134 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 12 0 900 2134224000 20122 18446744073709551615"
	v, err := parseProcCPU(stat)
	if err != nil || math.Abs(v-3) > 1e-9 {
		t.Errorf("parseProcCPU = %v, %v", v, err)
	}
	if _, err := parseProcCPU("14134 (x) S 1 2"); err == nil {
		t.Error("a short line was read")
	}
}

func TestBoundBy(t *testing.T) {
	const gbit = 1e9 // 125 MB/s
	cases := []struct {
		name string
		s    Summary
		link float64
		want string
	}{
		{"link", Summary{Seconds: 20, WireBytes: 2e9, CPUSeconds: 10}, gbit, "link 80%"},
		{"cpu of both cores", Summary{Seconds: 10, WireBytes: 1e8, CPUSeconds: 12, ServerCPUSeconds: 4}, gbit, "CPU 1.2 cores (link 8%)"},
		{"serial cpu", Summary{Seconds: 20, WireBytes: 3e8, CPUSeconds: 12, ServerCPUSeconds: 2}, gbit, "CPU 0.6 cores (link 12%)"},
		{"server busy", Summary{Seconds: 10, WireBytes: 1e8, CPUSeconds: 2, ServerCPUSeconds: 8}, gbit, "server 0.8 cores (link 8%)"},
		{"server ahead", Summary{Seconds: 10, WireBytes: 1e8, CPUSeconds: 1, ServerCPUSeconds: 3}, gbit, "server 0.3 cores (link 8%)"},
		{"disk", Summary{Seconds: 10, WireBytes: 1e8, CPUSeconds: 3, ServerCPUSeconds: 1}, gbit, "disk (link 8%)"},
		{"no link", Summary{Seconds: 10, CPUSeconds: 16}, 0, "CPU 1.6 cores"},
		{"no time", Summary{}, gbit, "-"},
	}
	for _, c := range cases {
		if got := BoundBy(c.s, c.link, 2); got != c.want {
			t.Errorf("%s: BoundBy = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestLogAxisWhisker(t *testing.T) {
	rows := []Case{
		{Ratio: 2, Ours: Summary{Runs: []float64{10, 10, 10}}, Theirs: Summary{Runs: []float64{15, 20, 40}}},
		{Ratio: 0.8, Ours: Summary{Runs: []float64{10}}, Theirs: Summary{Runs: []float64{8}}},
	}
	a := ratioAxis(rows, 100, 300)
	// 0.8 to 4 widens to the 1-2-5 ticks 0.5 and 5.
	if a.lo != 0.5 || a.hi != 5 {
		t.Fatalf("axis %v to %v, want 0.5 to 5", a.lo, a.hi)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-6 }
	one, med, lo, hi := a.whisker(rows[0])
	span := math.Log(10)
	if !near(one, 100+300*math.Log(2)/span) || !near(med, 100+300*math.Log(4)/span) ||
		!near(lo, 100+300*math.Log(3)/span) || !near(hi, 100+300*math.Log(8)/span) {
		t.Errorf("whisker = %v %v %v %v", one, med, lo, hi)
	}
	// One run: the whisker is a point at the median, left of 1x.
	one, med, lo, hi = a.whisker(rows[1])
	if !(med < one) || !near(lo, med) || !near(hi, med) {
		t.Errorf("single-run whisker = %v %v %v %v", one, med, lo, hi)
	}
	if a.x(100) != 400 || a.x(0.01) != 100 {
		t.Error("x is not clamped to the axis")
	}
	if got := ticks125(0.5, 5); len(got) != 4 || got[0] != 0.5 || got[3] != 5 {
		t.Errorf("ticks125(0.5, 5) = %v", got)
	}
}

func TestLinkMarkdown(t *testing.T) {
	link := Link{"1gbit", 1e9}
	ours := Summary{Seconds: 10, Runs: []float64{9, 10, 12}, WireBytes: 5e8, CPUSeconds: 2, MaxRSS: 60 << 20}
	r := &Report{Date: "2026-12-02T17:00:00Z", Machine: Machine{Host: "vm", CPUs: 2}, Command: "benchsuite --cases link",
		Cases: []Case{
			{Name: "qcow2 -> raw (50%)", Peer: "qemu-img", Ours: Summary{Seconds: 2, Runs: []float64{2, 2.5}, CPUSeconds: 2}, Theirs: Summary{Seconds: 3, Runs: []float64{3, 3}}, Ratio: 1.5},
			{Name: LinkCaseName(link), Peer: "qemu-img -O raw + aws s3 cp", Link: link.Name, LinkBitsPerSec: link.BitsPerSec, Ours: ours,
				Theirs: Summary{Seconds: 20, Runs: []float64{20, 25, 18}, WireBytes: 2.15e9, CPUSeconds: 9, MaxRSS: 90 << 20}, Ratio: 2},
			{Name: LinkCaseName(link), Peer: "qemu-img -O raw + rclone copyto", Link: link.Name, Skipped: "rclone is not installed"},
		}}
	md := r.Markdown()
	for _, want := range []string{
		"| 2.00 (2.00-2.50) | 3.00 (3.00-3.00) | **1.50x** (1.20-1.50) |",
		"| vmdk monolithicSparse -> s3 over 1gbit link (20%) | qemu-img -O raw + aws s3 cp | 10.0 (9.0-12.0) | 20.0 (18.0-25.0) | **2.00x** (1.50-2.50) | 500 / 2150 | 2.0 / 9.0 | 0.0 / 0.0 | 60 / 90 | disk (link 40%) / link 86% |",
		"skipped: rclone is not installed",
		"- 1gbit, qemu-img -O raw + aws s3 cp: at least 3.0x faster; **not met**: 2.00x",
		"- 1gbit, qemu-img -O raw + rclone copyto: at least 2.0x faster; not measured",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	// The closing table is last, before the command.
	i := strings.LastIndex(md, "| case | peer | ratio | bytes on the wire")
	if i < 0 || !strings.Contains(md[i:], "| qemu-img -O raw + aws s3 cp | **2.00x** (1.50-2.50) | 500 / 2150 | 60 / 90 | disk (link 40%) / link 86% |") ||
		!strings.Contains(md[i:], "| qcow2 -> raw (50%) | qemu-img | **1.50x** (1.20-1.50) | - / - |") || strings.Contains(md[i:], "rclone") {
		t.Errorf("closing table:\n%s", md[max(i, 0):])
	}
	svg := r.SVG()
	if strings.Count(svg, "<path") != 2 || !strings.Contains(svg, "log scale") || !strings.Contains(svg, ">1x<") {
		t.Errorf("SVG:\n%s", svg)
	}
}

// TestNetnsShapesLoopback makes a shaped namespace with a server in it (a
// shell listening with nc stands for versitygw): it needs root, ip, tc and
// a kernel that allows network namespaces, and skips without them.
func TestNetnsShapesLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("makes a network namespace")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	gw := filepath.Join(t.TempDir(), "gw")
	if err := os.WriteFile(gw, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := "vmimport-bench-test-" + randomHex(3)
	ns, err := startNetns(ctx, name, Link{"100mbit", 1e8}, gw, filepath.Join(t.TempDir(), "data"), t.Logf)
	if err != nil {
		ns.close()
		if strings.Contains(err.Error(), "ip netns add") {
			t.Skipf("cannot make a network namespace here: %v", err)
		}
		t.Fatal(err)
	}
	defer func() {
		ns.close()
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), name) {
			t.Errorf("namespace %s left behind", name)
		}
	}()
	// A connection to a closed port: a SYN and a RST cross the shaped lo.
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash for /dev/tcp")
	}
	s, err := ns.run(ctx, []string{"bash", "-c", ": </dev/tcp/127.0.0.1/9 2>/dev/null; true"})
	if err != nil {
		t.Fatal(err)
	}
	if s.WireBytes <= 0 {
		t.Errorf("no bytes counted on the shaped lo: %+v", s)
	}
	if ns.serverCPU() < 0 {
		t.Error("negative server CPU")
	}
	out, _ := exec.Command("ip", "netns", "exec", name, "tc", "qdisc", "show", "dev", "lo").CombinedOutput()
	if !strings.Contains(string(out), "tbf") || !strings.Contains(string(out), "100Mbit") {
		t.Errorf("lo not shaped: %s", out)
	}
}
