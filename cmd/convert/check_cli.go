package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"vmimport/check"
	"vmimport/reader"
)

// checkOptions are the flags of the import readiness check, and what the
// check learnt for the ImportImage body.
type checkOptions struct {
	mode   string // auto, strict, warn, off
	shrink bool
	fs     *pflag.FlagSet // to see whether --bucket (registered elsewhere) was given

	// report is the check's verdict (nil with --check off). Its OS field
	// fills the ImportImage body: osType, platform, osVersion,
	// architecture.
	report *check.Report
	// forceImport is set when --force carried the conversion past
	// error-severity findings (or when the check was off and --force
	// given): the ImportImage body must then send forceImport: true.
	forceImport bool
	// ran: an upload runs the check before it starts (to store its
	// findings with the object); the run's own call then does nothing.
	ran bool
}

func (c *checkOptions) register(fs *pflag.FlagSet) {
	c.fs = fs
	fs.StringVar(&c.mode, "check", "auto", "import readiness check before writing: strict (stop on errors), warn (print and go on), off; auto is strict for buckets, warn for files and stdout")
	fs.BoolVar(&c.shrink, "shrink", false, "allow a virtual size above --system-disk-size-gb when every byte beyond it is zero and every partition ends inside it; the output then has the requested size")
}

// Report is the import check's verdict, nil when the check was off.
func (c *checkOptions) Report() *check.Report { return c.report }

// ForceImport says whether the ImportImage body must set forceImport.
func (c *checkOptions) ForceImport() bool { return c.forceImport }

// toBucket reports whether the output goes to an object store: an s3://
// output, or a --bucket flag (registered by the upload options) that was
// set.
func (c *checkOptions) toBucket(output string) bool {
	if strings.HasPrefix(output, "s3://") {
		return true
	}
	if c.fs != nil {
		if f := c.fs.Lookup("bucket"); f != nil && f.Changed && f.Value.String() != "" {
			return true
		}
	}
	return false
}

// shrinkImage applies --shrink: it returns im cut to the requested system
// disk size after checking that nothing but zeros lies beyond. Without
// --shrink, or when the image is not larger, im is returned as it is.
func (c *checkOptions) shrinkImage(ctx context.Context, im reader.Image, diskSizeGB int64) (reader.Image, error) {
	if !c.shrink {
		return im, nil
	}
	if diskSizeGB == 0 {
		return nil, usageError{fmt.Errorf("--shrink needs --system-disk-size-gb")}
	}
	if diskSizeGB < check.MinDiskGB || diskSizeGB > check.MaxDiskGB || diskSizeGB%check.StepDiskGB != 0 {
		return im, nil // DiskSize reports it
	}
	return check.Shrink(ctx, im, diskSizeGB*check.GiB)
}

// importCheck runs the import readiness check before anything is written.
// The size rules ran in runConvert already; they show again among the
// findings.
func importCheck(ctx context.Context, o *convertOptions, im reader.Image, src string, stderr io.Writer) error {
	c := &o.check
	switch c.mode {
	case "auto", "strict", "warn", "off":
	default:
		return usageError{fmt.Errorf("--check %q: use auto, strict, warn or off", c.mode)}
	}
	if c.ran {
		return nil
	}
	c.ran = true
	if c.mode == "off" {
		c.forceImport = o.force
		return nil
	}
	strict := c.mode == "strict" || (c.mode == "auto" && c.toBucket(o.output))
	r, err := check.Run(ctx, im, check.Options{Format: im.Info().Format, DiskSizeGB: o.diskSizeGB})
	if err != nil {
		return err
	}
	c.report = r
	if o.asJSON {
		// The findings go into the JSON summary; stderr may be where
		// the summary goes, so it stays clean.
		stderr = io.Discard
	}
	r.WriteText(prefixWriter{stderr, "convert: check: "}, check.Warning)
	fmt.Fprintf(stderr, "convert: check: %s\n", r.Summary())
	errs := r.Count(check.Error)
	if errs == 0 {
		return nil
	}
	switch {
	case o.force:
		c.forceImport = true
		fmt.Fprintf(stderr, "convert: check: going on despite %d error(s) because of --force; the import request will set forceImport\n", errs)
	case strict:
		return inputError{fmt.Errorf("%s: %w: the import readiness check found %d error(s); fix them, or use --check warn or --force to go on anyway", src, check.ErrRule, errs)}
	}
	return nil
}

// prefixWriter puts a prefix before every line.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	lines := strings.SplitAfter(string(b), "\n")
	for _, l := range lines {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+l); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
