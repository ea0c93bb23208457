package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Write puts results.md, results.json and ratios.svg in a folder of out
// named by date and machine, and returns that folder.
func (r *Report) Write(out string) (string, error) {
	date := r.Date
	if t, err := time.Parse(time.RFC3339, r.Date); err == nil {
		date = t.Format("2006-01-02T1504")
	}
	dir := filepath.Join(out, fmt.Sprintf("%s-%s-%dcpu", date, sanitize(r.Machine.Host), r.Machine.CPUs))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return "", err
	}
	return dir, r.Render(dir)
}

// Render writes results.md and ratios.svg of the report into dir.
func (r *Report) Render(dir string) error {
	for name, b := range map[string]string{"results.md": r.Markdown(), "ratios.svg": r.SVG()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ReadReport reads the results.json of a results folder.
func ReadReport(dir string) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	return &r, nil
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, s)
	if s == "" {
		return "host"
	}
	return s
}

func mbps(bytes int64, seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(bytes)/1e6/seconds)
}

// spread formats a median with the min-max of its runs: "2.10 (1.90-2.40)",
// or the median alone for a single run.
func spread(median float64, runs []float64, format string) string {
	lo, hi := MinMax(runs)
	if len(runs) < 2 {
		return fmt.Sprintf(format, median)
	}
	return fmt.Sprintf(format+" ("+format+"-"+format+")", median, lo, hi)
}

// ratioSpread formats a case's ratio, bold, with the min-max of its
// per-round ratios.
func ratioSpread(c Case) string {
	lo, hi := c.ratioRange()
	if len(c.Ours.Runs) < 2 || len(c.Theirs.Runs) < 2 {
		return fmt.Sprintf("**%.2fx**", c.Ratio)
	}
	return fmt.Sprintf("**%.2fx** (%.2f-%.2f)", c.Ratio, lo, hi)
}

// ratioRange is the min-max of the per-round ratios (RatioSpread), from the
// runs (results of older runs have the runs but not the fields), the
// median for both when there are none.
func (c Case) ratioRange() (lo, hi float64) {
	lo, hi = RatioSpread(c.Ours.Runs, c.Theirs.Runs)
	if lo == 0 && hi == 0 {
		return c.Ratio, c.Ratio
	}
	return lo, hi
}

func megabytes(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(n)/1e6)
}

// Markdown renders the report as tables: the local cases, the link cases,
// and last a summary of all with their bytes on the wire and what bound
// them.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s (%d CPUs, %s, %s, %s).\n\n", r.Date, r.Machine.Host, r.Machine.CPUs, r.Machine.Kernel, r.Machine.Go, r.Machine.QemuImg)
	fmt.Fprintf(&b, "Ratio = peer time / our time (median of the runs; above 1 we are faster); in brackets the smallest and largest ratio of one round (the runs are interleaved in rounds: run i of ours against run i of the peer). Times are the median with the min-max of the runs. MB/s are of virtual size and of data. ")
	fmt.Fprintf(&b, "Local outputs: the peer is `qemu-img convert ... && sync OUT`, since qemu-img exits with its output in the page cache and convert fsyncs before renaming; both times end with the data on disk. Peak RSS is sampled from /proc over the process tree.\n\n")
	var local, link []Case
	for _, c := range r.Cases {
		if c.Link != "" {
			link = append(link, c)
		} else {
			local = append(local, c)
		}
	}
	if len(local) > 0 {
		b.WriteString("| case | peer | virtual | data | ours s | peer s | ratio | ours MB/s (virtual / data) | ours CPU s | peer CPU s | ours RSS MiB | peer RSS MiB |\n")
		b.WriteString("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	}
	for _, c := range local {
		if c.Skipped != "" {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | skipped: %s | | | | | | | |\n", c.Name, c.Peer, gib(c.VirtualSize), gib(c.DataBytes), strings.ReplaceAll(c.Skipped, "|", "/"))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s / %s | %.1f | %.1f | %d | %d |\n",
			c.Name, c.Peer, gib(c.VirtualSize), gib(c.DataBytes), spread(c.Ours.Seconds, c.Ours.Runs, "%.2f"), spread(c.Theirs.Seconds, c.Theirs.Runs, "%.2f"), ratioSpread(c),
			mbps(c.VirtualSize, c.Ours.Seconds), mbps(c.DataBytes, c.Ours.Seconds),
			c.Ours.CPUSeconds, c.Theirs.CPUSeconds, c.Ours.MaxRSS>>20, c.Theirs.MaxRSS>>20)
	}
	if len(link) > 0 {
		r.linkMarkdown(&b, link)
	}
	remote := false
	for _, c := range r.Cases {
		if c.FileBytes == 0 || c.Skipped != "" {
			continue
		}
		if !remote {
			b.WriteString("\nRemote cases: the image is served over HTTP from loopback (Go's FileServer); fetched is what each tool read from the server in one run, against the file's size.\n\n")
			remote = true
		}
		fmt.Fprintf(&b, "- %s: file %s; convert fetched %s (%.2fx) in %d requests; %s fetched %s (%.2fx) in %d requests\n",
			c.Name, gib(c.FileBytes), gib(c.OursFetched.Bytes), float64(c.OursFetched.Bytes)/float64(c.FileBytes), c.OursFetched.Requests,
			c.Peer, gib(c.PeerFetched.Bytes), float64(c.PeerFetched.Bytes)/float64(c.FileBytes), c.PeerFetched.Requests)
	}
	for _, s := range r.Scaling {
		keys := make([]string, 0, len(s.Seconds))
		for k := range s.Seconds {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return len(keys[i]) < len(keys[j]) || len(keys[i]) == len(keys[j]) && keys[i] < keys[j]
		})
		fmt.Fprintf(&b, "\nScaling, %s:", s.Case)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s workers %.2fs;", k, s.Seconds[k])
		}
		b.WriteString("\n")
	}
	r.summaryMarkdown(&b)
	fmt.Fprintf(&b, "\nReproduce: `%s`\n", r.Command)
	return b.String()
}

// linkMarkdown writes the link cases' table and the goals they are held to.
func (r *Report) linkMarkdown(b *strings.Builder, link []Case) {
	b.WriteString("\nLink cases: the S3 server (versitygw, posix backend) and every tool run inside a network namespace whose loopback is shaped by `tc qdisc add dev lo root tbf rate RATE burst 256kb latency 50ms`, so all traffic crosses the shaped link. ")
	b.WriteString("convert runs at its defaults (`convert SRC -o s3://B/K --endpoint URL --progress never`, with --part-size set to its own default for the size); each peer is one shell pipeline timed whole: `qemu-img convert ... SRC TMP && sync TMP && UPLOADER TMP s3://B/K`, the local conversion followed by a sync of its output, as for the local cases. ")
	fmt.Fprintf(b, "Every uploader uses %d MiB parts, 8 in flight (aws: multipart_chunksize, max_concurrent_requests; rclone: --s3-chunk-size, --s3-upload-concurrency). ", linkPart>>20)
	b.WriteString("Wire MB is what crossed the link in one run (median; the lo qdisc's Sent counter, both directions once each). Server CPU s is versitygw's CPU time during the run. ")
	b.WriteString("Bound, the first that holds: link when wire bytes / wall time reach 60% of the link rate (the percentage); CPU when the tool kept half a core busy over the run, or tool and server together 75% of all cores with the tool ahead (cores = CPU s / wall s); server likewise for versitygw's CPU, or when it spent more CPU than the tool; else disk (reads, writes, syncs). In brackets the link's use when it did not bind.\n\n")
	b.WriteString("| case | peer | ours s | peer s | ratio | wire MB, ours / peer | CPU s, ours / peer | server CPU s, ours / peer | RSS MiB, ours / peer | bound, ours / peer |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, c := range link {
		if c.Skipped != "" {
			fmt.Fprintf(b, "| %s | %s | skipped: %s | | | | | | | |\n", c.Name, c.Peer, strings.ReplaceAll(c.Skipped, "|", "/"))
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s / %s | %.1f / %.1f | %.1f / %.1f | %d / %d | %s / %s |\n",
			c.Name, c.Peer, spread(c.Ours.Seconds, c.Ours.Runs, "%.1f"), spread(c.Theirs.Seconds, c.Theirs.Runs, "%.1f"), ratioSpread(c),
			megabytes(c.Ours.WireBytes), megabytes(c.Theirs.WireBytes), c.Ours.CPUSeconds, c.Theirs.CPUSeconds,
			c.Ours.ServerCPUSeconds, c.Theirs.ServerCPUSeconds, c.Ours.MaxRSS>>20, c.Theirs.MaxRSS>>20,
			BoundBy(c.Ours, c.LinkBitsPerSec, r.Machine.CPUs), BoundBy(c.Theirs, c.LinkBitsPerSec, r.Machine.CPUs))
	}
	var goals []string
	for _, c := range link {
		for _, g := range LinkGoals {
			if g.Link != c.Link || g.Peer != c.Peer {
				continue
			}
			verdict := "not measured"
			switch {
			case c.Skipped != "":
			case c.Ratio >= g.Ratio:
				verdict = fmt.Sprintf("**met**: %.2fx", c.Ratio)
			default:
				verdict = fmt.Sprintf("**not met**: %.2fx", c.Ratio)
			}
			goals = append(goals, fmt.Sprintf("- %s, %s: at least %.1fx faster; %s\n", g.Link, g.Peer, g.Ratio, verdict))
		}
	}
	if len(goals) > 0 {
		b.WriteString("\nGoals (issue 19), ratio of the medians:\n\n")
		for _, g := range goals {
			b.WriteString(g)
		}
	}
}

// summaryMarkdown closes the report: every measured case with its ratio
// and spread, its bytes on the wire, peak RSS and what bound each side.
func (r *Report) summaryMarkdown(b *strings.Builder) {
	b.WriteString("\nSummary (ratio: median, in brackets the min-max of the per-round ratios; bound: see the link cases' rule, without the link for local cases):\n\n")
	b.WriteString("| case | peer | ratio | bytes on the wire, ours / peer (MB) | peak RSS, ours / peer (MiB) | bound, ours / peer |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | --- |\n")
	for _, c := range r.Cases {
		if c.Skipped != "" {
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s / %s | %d / %d | %s / %s |\n", c.Name, c.Peer, ratioSpread(c),
			megabytes(c.Ours.WireBytes), megabytes(c.Theirs.WireBytes), c.Ours.MaxRSS>>20, c.Theirs.MaxRSS>>20,
			BoundBy(c.Ours, c.LinkBitsPerSec, r.Machine.CPUs), BoundBy(c.Theirs, c.LinkBitsPerSec, r.Machine.CPUs))
	}
}

// logAxis maps ratios to x on a log scale: lo at left, hi at left+width.
type logAxis struct{ lo, hi, left, width float64 }

// ratioAxis spans 1x and every case's min-max, widened to the 1-2-5 ticks
// around them, and at least 0.5x to 2x.
func ratioAxis(rows []Case, left, width float64) logAxis {
	lo, hi := 0.5, 2.0
	for _, c := range rows {
		a, z := c.ratioRange()
		lo, hi = min(lo, a, c.Ratio), max(hi, z, c.Ratio)
	}
	ticks := ticks125(1e-3, 1e4)
	a := logAxis{lo: ticks[0], hi: ticks[len(ticks)-1], left: left, width: width}
	for _, t := range ticks {
		if t <= lo*1.0001 {
			a.lo = t
		}
	}
	for i := len(ticks) - 1; i >= 0; i-- {
		if ticks[i] >= hi*0.9999 {
			a.hi = ticks[i]
		}
	}
	return a
}

// ticks125 is 1, 2, 5 times the powers of ten from lo to hi.
func ticks125(lo, hi float64) []float64 {
	var t []float64
	for p := math.Floor(math.Log10(lo)); ; p++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, p)
			if v > hi*1.0001 {
				return t
			}
			if v >= lo*0.9999 {
				t = append(t, v)
			}
		}
	}
}

// x is where ratio v goes (clamped to the axis).
func (a logAxis) x(v float64) float64 {
	v = min(max(v, a.lo), a.hi)
	return a.left + a.width*math.Log(v/a.lo)/math.Log(a.hi/a.lo)
}

// whisker is a case's bar and whisker: the bar from 1x to the median
// ratio, the whisker from the smallest to the largest per-round ratio.
func (a logAxis) whisker(c Case) (one, median, lo, hi float64) {
	rlo, rhi := c.ratioRange()
	return a.x(1), a.x(c.Ratio), a.x(rlo), a.x(rhi)
}

// SVG draws the ratios on a log scale: a bar from 1x to the median ratio
// (right, green: we are faster; left, red: slower) and a whisker over the
// min-max of the per-round ratios.
func (r *Report) SVG() string {
	var rows []Case
	for _, c := range r.Cases {
		if c.Skipped == "" {
			rows = append(rows, c)
		}
	}
	// The labels' column fits the longest label (about 6.6 px a character
	// at 12 px sans-serif).
	longest := 0
	for _, c := range rows {
		longest = max(longest, len(c.Name+" vs "+c.Peer))
	}
	left := max(200, 16+int(6.6*float64(longest)))
	const width, rowH, top = 420, 26, 56
	a := ratioAxis(rows, float64(left), width)
	h := top + rowH*len(rows) + 44
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+110, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">convert vs peer: peer time / our time, log scale (above 1x we are faster)</text>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="38" fill="#555">bar: ratio of the medians; whisker: smallest to largest ratio of one round (run i of ours vs run i of the peer)</text>`+"\n")
	bottom := top + rowH*len(rows)
	for _, t := range ticks125(a.lo, a.hi) {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", a.x(t), top, a.x(t), bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%gx</text>`+"\n", a.x(t), bottom+16, t)
	}
	for i, c := range rows {
		y := top + i*rowH
		one, med, lo, hi := a.whisker(c)
		color := "#2e7d32"
		if c.Ratio < 1 {
			color = "#c62828"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+17, html.EscapeString(c.Name+" vs "+c.Peer))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.8"/>`+"\n", min(one, med), y+6, math.Abs(med-one), rowH-12, color)
		cy := y + rowH/2
		fmt.Fprintf(&b, `<path d="M%.1f %dV%dM%.1f %dH%.1fM%.1f %dV%d" stroke="#222" fill="none"/>`+"\n", lo, cy-5, cy+5, lo, cy, hi, hi, cy-5, cy+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2fx</text>`+"\n", max(one, med, hi)+6, y+17, c.Ratio)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333" stroke-dasharray="4 3"/>`+"\n", a.x(1), top, a.x(1), bottom)
	b.WriteString("</svg>\n")
	return b.String()
}
