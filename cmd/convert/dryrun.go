package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"vmimport/internal/units"
	"vmimport/job"
)

// registerDryRun adds --dry-run, of a conversion and of a batch.
func registerDryRun(fs *pflag.FlagSet, p *bool) {
	fs.BoolVar(p, "dry-run", false, "check everything a run needs and write nothing: open and size the source, check the store (credentials, the bucket, a test upload that is aborted), the import API and the import rules, and print the plan (format, part size, parts, memory)")
}

// printPlan tells what a dry run found and planned, for people.
func printPlan(w io.Writer, src string, res *job.Result) {
	fmt.Fprintf(w, "dry run: %s -> %s: nothing was written\n", src, res.Output)
	p := res.Plan
	if p == nil {
		return
	}
	in := res.Source
	format := in.Format
	if in.Subformat != "" {
		format += " (" + in.Subformat + ")"
	}
	fmt.Fprintf(w, "  source:       %s, %s virtual\n", format, units.Bytes(in.VirtualSize))
	out := p.Format
	if p.Format == "qcow2" {
		out += fmt.Sprintf(" (compat %s, clusters of %s, compress %s", p.QCOW2Compat, units.Bytes(int64(p.ClusterSize)), p.Compress)
		if p.Compression != "" {
			out += " with " + p.Compression
		}
		out += ")"
	}
	fmt.Fprintf(w, "  output:       %s, at most %s; system disk size %d GB\n", out, units.Bytes(p.OutputMax), p.SystemDiskSizeGB)
	if p.PartSize > 0 {
		fmt.Fprintf(w, "  upload:       parts of %s, at most %d, %d in flight\n", units.Bytes(p.PartSize), p.Parts, p.Concurrency)
	}
	fmt.Fprintf(w, "  memory:       %s (%d workers, blocks of %s)\n", units.Bytes(p.Memory), p.Workers, units.Bytes(int64(p.BlockSize)))
	if r := res.Check; r != nil {
		fmt.Fprintf(w, "  import check: %s\n", r.Summary())
	}
	for _, c := range p.Checked {
		fmt.Fprintf(w, "  checked:      %s\n", c)
	}
}

// planLine is a dry run's plan in one line, for a batch.
func planLine(p *job.Plan) string {
	if p == nil {
		return ""
	}
	parts := []string{p.Format + ", at most " + units.Bytes(p.OutputMax)}
	if p.PartSize > 0 {
		parts = append(parts, fmt.Sprintf("parts of %s (at most %d)", units.Bytes(p.PartSize), p.Parts))
	}
	parts = append(parts, "memory "+units.Bytes(p.Memory))
	return strings.Join(parts, ", ")
}
