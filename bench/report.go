package bench

import (
	"encoding/json"
	"fmt"
	"html"
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
	files := map[string][]byte{
		"results.json": append(js, '\n'),
		"results.md":   []byte(r.Markdown()),
		"ratios.svg":   []byte(r.SVG()),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
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

// Markdown renders the report as a table, one row per case.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s (%d CPUs, %s, %s, %s).\n\n", r.Date, r.Machine.Host, r.Machine.CPUs, r.Machine.Kernel, r.Machine.Go, r.Machine.QemuImg)
	fmt.Fprintf(&b, "Ratio = peer time / our time (median of the runs; above 1 we are faster). MB/s are of virtual size and of data. ")
	fmt.Fprintf(&b, "Local outputs: the peer is `qemu-img convert ... && sync OUT`, since qemu-img exits with its output in the page cache and convert fsyncs before renaming; both times end with the data on disk. Peak RSS is sampled from /proc over the process tree.\n\n")
	b.WriteString("| case | peer | virtual | data | ours s | peer s | ratio | ours MB/s (virtual / data) | ours CPU s | peer CPU s | ours RSS MiB | peer RSS MiB |\n")
	b.WriteString("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, c := range r.Cases {
		if c.Skipped != "" {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | skipped: %s | | | | | | | |\n", c.Name, c.Peer, gib(c.VirtualSize), gib(c.DataBytes), strings.ReplaceAll(c.Skipped, "|", "/"))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f | %.2f | **%.2fx** | %s / %s | %.1f | %.1f | %d | %d |\n",
			c.Name, c.Peer, gib(c.VirtualSize), gib(c.DataBytes), c.Ours.Seconds, c.Theirs.Seconds, c.Ratio,
			mbps(c.VirtualSize, c.Ours.Seconds), mbps(c.DataBytes, c.Ours.Seconds),
			c.Ours.CPUSeconds, c.Theirs.CPUSeconds, c.Ours.MaxRSS>>20, c.Theirs.MaxRSS>>20)
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
	fmt.Fprintf(&b, "\nReproduce: `%s`\n", r.Command)
	return b.String()
}

// SVG draws the ratios as horizontal bars with a line at 1x.
func (r *Report) SVG() string {
	var rows []Case
	maxRatio := 2.0
	for _, c := range r.Cases {
		if c.Skipped == "" {
			rows = append(rows, c)
			maxRatio = max(maxRatio, c.Ratio*1.1)
		}
	}
	const left, width, rowH, top = 400, 460, 26, 40
	h := top + rowH*len(rows) + 40
	x := func(v float64) float64 { return left + v/maxRatio*width }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+60, h)
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="14">convert vs peer: peer time / our time (above 1x we are faster)</text>`+"\n")
	for i, c := range rows {
		y := top + i*rowH
		color := "#2e7d32"
		if c.Ratio < 1 {
			color = "#c62828"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+16, html.EscapeString(c.Name+" vs "+c.Peer))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y+4, x(c.Ratio)-left, rowH-8, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2fx</text>`+"\n", x(c.Ratio)+4, y+16, c.Ratio)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333" stroke-dasharray="4 3"/>`+"\n", x(1), top, x(1), top+rowH*len(rows))
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">1x</text>`+"\n", x(1), top+rowH*len(rows)+16)
	b.WriteString("</svg>\n")
	return b.String()
}
