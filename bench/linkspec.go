package bench

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The link cases' words: a shaped link's rate, what tc and /proc say, and
// what bound a run.

// Link is a shaped link of the link cases: the loopback of a network
// namespace under a tc token bucket filter of this rate.
type Link struct {
	Name       string  // as tc writes the rate: "1gbit", "100mbit"
	BitsPerSec float64 // the rate
}

// BytesPerSec is the link's rate in bytes per second.
func (l Link) BytesPerSec() float64 { return l.BitsPerSec / 8 }

var linkRate = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(k|m|g)?bit$`)

// ParseLinks reads a comma-separated list of tc rates ("1gbit,100mbit").
// Only bit rates with a decimal prefix are taken (tc's "mbit" is 10^6).
func ParseLinks(s string) ([]Link, error) {
	var links []Link
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		m := linkRate.FindStringSubmatch(f)
		if m == nil {
			return nil, fmt.Errorf("link rate %q: give a tc rate like 1gbit or 100mbit", f)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		v *= map[string]float64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
		if v < 1e6 {
			return nil, fmt.Errorf("link rate %q: below 1mbit the cases would take hours", f)
		}
		links = append(links, Link{Name: f, BitsPerSec: v})
	}
	return links, nil
}

// tcSent is the "Sent N bytes" counter of the first qdisc in the output of
// tc -s qdisc show (the root qdisc of the device asked for).
var tcSent = regexp.MustCompile(`Sent ([0-9]+) bytes`)

// ParseTCSent reads the byte counter of tc -s qdisc show dev DEV's output.
func ParseTCSent(out string) (int64, error) {
	m := tcSent.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no \"Sent N bytes\" in tc's output: %q", firstLine(out))
	}
	return strconv.ParseInt(m[1], 10, 64)
}

// parseProcCPU reads utime + stime, in seconds, from a /proc/PID/stat line
// (clock ticks of 1/100 s, Linux's USER_HZ).
func parseProcCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("not a /proc/PID/stat line: %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// After the command: state, ppid, ..., utime is the 12th, stime the 13th.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/PID/stat line: %q", stat)
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/PID/stat times %q %q", f[11], f[12])
	}
	return (u + s) / 100, nil
}

// BoundBy says what limited a run, from its medians, by the first rule
// that holds:
//
//   - link when the bytes on the wire over the wall time reach 60% of the
//     link's rate (the rest is the local conversion and the requests'
//     round trips, which a pipeline does before or between its bytes);
//   - CPU when the tool kept at least half a core busy over the whole run
//     (a serial step such as qemu-img -c is then CPU bound most of the
//     time), or when tool and server together kept 75% of all cores busy
//     and the tool had the larger share;
//   - server likewise for the S3 server's CPU (versitygw writes copied
//     parts for real and concatenates the parts at Complete), or when the
//     server spent more CPU than the tool;
//   - disk otherwise: the tool waited on neither link nor CPU, so on its
//     reads, writes and syncs.
//
// linkBps 0 (no link) skips the first rule. The string carries the
// measure: "link 83%" of the rate, "CPU 0.6 cores", "server 0.8 cores",
// and when a link did not bind, its use: "disk (link 31%)".
func BoundBy(s Summary, linkBps float64, cpus int) string {
	if s.Seconds <= 0 {
		return "-"
	}
	note := "" // the link's use, when it did not bind
	if linkBps > 0 {
		use := float64(s.WireBytes) / s.Seconds / (linkBps / 8)
		if use >= 0.6 {
			return fmt.Sprintf("link %.0f%%", 100*use)
		}
		note = fmt.Sprintf(" (link %.0f%%)", 100*use)
	}
	tool, server := s.CPUSeconds/s.Seconds, s.ServerCPUSeconds/s.Seconds
	busy := tool+server >= 0.75*float64(max(cpus, 1))
	switch {
	case tool >= 0.5 && tool >= server, busy && tool >= server:
		return fmt.Sprintf("CPU %.1f cores", tool) + note
	case server >= 0.5, busy, server > tool:
		return fmt.Sprintf("server %.1f cores", server) + note
	}
	return "disk" + note
}
