package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"vmimport/check"
	"vmimport/internal/units"
	"vmimport/job"
)

// specOptions are the flags that make a job.Spec: every flag of a
// conversion but the display ones. The keys of a batch manifest are these
// flags' long names.
type specOptions struct {
	readerOptions
	outFormat string
	// QCOW2 output.
	qcow2Compat string
	cluster     string
	compress    bool
	compression string
	output      string
	workers     int
	blockSize   string
	diskSizeGB  int64
	force       bool
	check       checkOptions
	upload      uploadOptions
	imp         importOptions
	// inherited names the flags a batch record took from the batch's
	// command line: they apply where they make sense (the QCOW2 flags to
	// QCOW2 records, the upload flags to uploads) and are not an error
	// elsewhere.
	inherited map[string]bool
}

// given reports whether the flag was set for this conversion itself.
func (o *specOptions) given(fs *pflag.FlagSet, name string) bool {
	return fs.Changed(name) && !o.inherited[name]
}

func (o *specOptions) register(fs *pflag.FlagSet) {
	fs.StringVarP(&o.outFormat, "output-format", "O", "raw", "output format: raw or qcow2")
	fs.StringVarP(&o.output, "output", "o", "", "output: a file, - for stdout (raw only), or s3://BUCKET/KEY for an upload (required)")
	fs.StringVar(&o.qcow2Compat, "qcow2-compat", "1.1", "QCOW2 compat: 1.1 (version 3) or 0.10 (version 2, for old importers)")
	fs.StringVar(&o.cluster, "cluster-size", "64k", "QCOW2 cluster size: 512..2M, a power of two")
	fs.BoolVarP(&o.compress, "compress", "c", false, "compress QCOW2 clusters, in the worker threads")
	fs.StringVar(&o.compression, "compression", "zlib", "QCOW2 compression: zlib (any qemu) or zstd (qemu 5.1+, compat 1.1)")
	fs.Int64Var(&o.diskSizeGB, "system-disk-size-gb", 0, "system disk size for ImportImage: 40..500, a multiple of 10, not below the virtual size (default: the smallest that fits)")
	fs.BoolVar(&o.force, "force", false, "go on despite a broken import rule (the import itself may then fail)")
	fs.IntVar(&o.workers, "workers", runtime.GOMAXPROCS(0), "blocks read and decoded in parallel")
	fs.StringVar(&o.blockSize, "block-size", "1M", "unit of reading and zero detection (4k..64M, a power of two)")
	o.readerOptions.register(fs)
	o.upload.register(fs)
	o.imp.register(fs, true)
	o.check.register(fs)
}

// spec turns the parsed flags into a job spec for source src. fs tells
// which flags were given: QCOW2 settings given with -O raw are an error,
// not silently dropped.
func (o *specOptions) spec(fs *pflag.FlagSet, src string) (job.Spec, error) {
	s := job.Spec{
		Source: src, AllowBacking: o.allowBacking, AllowPaths: o.allowPaths, Disk: o.disk,
		Output: o.output, Format: o.outFormat, DiskSizeGB: o.diskSizeGB, Force: o.force,
		Shrink: o.check.shrink, Check: o.check.mode, Workers: o.workers,
	}
	bs, err := parseSize(o.blockSize)
	if err != nil {
		return s, fmt.Errorf("--block-size: %w", err)
	}
	if bs > 1<<30 {
		return s, fmt.Errorf("--block-size %s: use a power of two from 4k to 64M", o.blockSize)
	}
	s.BlockSize = int(bs)
	if o.workers < 1 {
		return s, fmt.Errorf("--workers %d: use 1..256", o.workers)
	}
	if o.outFormat == "qcow2" {
		cs, err := parseSize(o.cluster)
		if err != nil || cs > 1<<30 {
			return s, fmt.Errorf("--cluster-size %q: use 512..2M, a power of two", o.cluster)
		}
		s.QCOW2 = job.QCOW2Spec{Compat: o.qcow2Compat, ClusterSize: int(cs)}
		if o.compress || fs.Changed("compression") {
			s.QCOW2.Compression = o.compression
		}
	} else {
		for _, name := range []string{"compress", "compression", "cluster-size", "qcow2-compat"} {
			if o.given(fs, name) {
				return s, fmt.Errorf("--%s applies to -O qcow2", name)
			}
		}
	}
	if err := o.upload.spec(fs, &s, o.given); err != nil {
		return s, err
	}
	if err := o.source.spec(fs, &s, o.given, o.upload.store()); err != nil {
		return s, err
	}
	// The API's endpoint and the wait's time-out are settings of where
	// imports go (a wrapper may always give them): they do not matter to a
	// run that does not import.
	s.Import = o.imp.spec()
	if o.inherited["wait"] && !o.imp.doImport {
		// A batch's --wait follows the imports of the records that
		// import; it does not make the others import.
		s.Import.Enabled, s.Import.Wait = false, false
	}
	if !s.Import.Enabled {
		s.Import = job.ImportSpec{}
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// convertOptions are the flags of a conversion: the spec's and the display.
type convertOptions struct {
	specOptions
	progress   string
	asJSON     bool
	cpuProfile string
}

func convertFlags(o *convertOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("convert", pflag.ContinueOnError)
	fs.SortFlags = false
	o.specOptions.register(fs)
	fs.StringVar(&o.progress, "progress", "auto", "progress bar on stderr: auto (when stderr is a terminal), always, never")
	fs.BoolVar(&o.asJSON, "json", false, "print a JSON summary at the end (on stdout, or stderr when the image goes to stdout)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the conversion to this file")
	_ = fs.MarkHidden("cpuprofile")
	return fs
}

func checkProgressMode(mode string) error {
	switch mode {
	case "auto", "always", "never":
		return nil
	}
	return fmt.Errorf("--progress %q: use auto, always or never", mode)
}

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o convertOptions
	fs := convertFlags(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: convert SRC [-O raw|qcow2] -o OUT|- [flags]\n\nSRC is a file, a block device, or a URL read in place by ranges:\nhttps://, http:// (--source-header) or s3://BUCKET/KEY (--source-endpoint, ...).\n\nFlags:\n")
		fmt.Fprint(stderr, fs.FlagUsages())
		fmt.Fprint(stderr, "\n"+exitCodesHelp)
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{fmt.Errorf("give exactly one source image, got %d", fs.NArg())}
	}
	spec, err := o.spec(fs, fs.Arg(0))
	if err != nil {
		return usageError{err}
	}
	if err := checkProgressMode(o.progress); err != nil {
		return usageError{err}
	}
	toStdout := spec.Kind() == job.ToStdout
	if toStdout {
		if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usageError{errors.New("refusing to write a disk image to a terminal: redirect stdout or give -o FILE")}
		}
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	ui := newRunUI(o.progress, stderr, o.asJSON)
	res, err := job.Run(ctx, spec, job.Env{Stdout: stdout, Events: ui.event})
	ui.finish(err == nil)
	// A failed import leaves a complete upload: its report is still told.
	var ie *job.ImportError
	if err != nil && !errors.As(err, &ie) {
		return err
	}
	out := stdout
	if toStdout {
		out = stderr
	}
	if o.asJSON {
		e := json.NewEncoder(out)
		e.SetIndent("", "  ")
		e.SetEscapeHTML(false)
		if jerr := e.Encode(res); jerr != nil {
			return jerr
		}
		return err
	}
	if !toStdout || o.progress != "never" {
		st := res.Stats
		fmt.Fprintf(stderr, "%s -> %s (%s): %s virtual, %s data, %s zero (%s never read) in %.1fs (%.0f MB/s); system disk size %d GB\n",
			spec.Source, res.Output, res.OutputFormat, units.Bytes(st.Size), units.Bytes(st.Data), units.Bytes(st.Skipped+st.Detected), units.Bytes(st.Skipped),
			res.Seconds, float64(st.Size)/1e6/max(res.Seconds, 1e-9), res.SystemDiskSizeGB)
		fmt.Fprint(stderr, remoteLine(res))
	}
	if res.Upload != nil {
		res.Upload.Print(stdout)
	}
	printImport(stdout, res.Import)
	return err
}

// checkText is the import check's findings for people, a line each.
func checkText(r *check.Report) string {
	var b strings.Builder
	r.WriteText(prefixWriter{&b, "convert: check: "}, check.Warning)
	fmt.Fprintf(&b, "convert: check: %s\n", r.Summary())
	return b.String()
}
