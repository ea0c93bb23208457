package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

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
	compress    string
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

// register adds the flags of a conversion to fs, in their help groups. A
// new group of flags is an options struct with its own register, called
// here inside flagGroup (help.go); its flags then make manifest keys of
// convert batch too.
func (o *specOptions) register(fs *pflag.FlagSet) {
	flagGroup(fs, groupInput, func() { o.readerOptions.register(fs) })
	flagGroup(fs, groupOutput, func() {
		fs.StringVarP(&o.output, "output", "o", "", "output: a `FILE`, - for stdout (raw only), or s3://BUCKET/KEY for an upload; a second argument after SRC is the same (as qemu-img takes it)")
		fs.StringVarP(&o.outFormat, "output-format", "O", "", "output `format`: raw or qcow2 (default: the output's extension's, .raw and .img RAW, .qcow2 QCOW2; else qcow2 for s3:// uploads, where only the data crosses the link, the server copies no zeros and the cloud imports it as is, and raw otherwise); an extension that says otherwise is refused (.img aside)")
	})
	flagGroup(fs, groupQCOW2, func() {
		fs.StringVar(&o.qcow2Compat, "qcow2-compat", "1.1", "QCOW2 compat: 1.1 (version 3) or 0.10 (version 2, for old importers)")
		fs.StringVar(&o.cluster, "cluster-size", "64k", "QCOW2 cluster `size`: 512..2M, a power of two")
		fs.StringVarP(&o.compress, "compress", "c", "", "`when` to compress QCOW2 clusters, in the worker threads: auto (the default for uploads: while the upload is the bottleneck, plain while the CPU is), always (-c alone) or never (the default for files); give it as --compress=MODE")
		fs.Lookup("compress").NoOptDefVal = "always"
		fs.StringVar(&o.compression, "compression", "zlib", "QCOW2 compression: zlib (any qemu) or zstd (qemu 5.1+, compat 1.1); for a file it implies -c")
	})
	flagGroup(fs, groupCheck, func() {
		fs.Int64Var(&o.diskSizeGB, "system-disk-size-gb", 0, "system disk size for ImportImage, in `GB`: 40..500, a multiple of 10, not below the virtual size (default: the smallest that fits)")
		o.check.register(fs)
		fs.BoolVar(&o.force, "force", false, "go on despite a broken import rule (the import itself may then fail)")
	})
	o.upload.register(fs)
	flagGroup(fs, groupImport, func() { o.imp.register(fs, true) })
	flagGroup(fs, groupPerf, func() {
		fs.IntVar(&o.workers, "workers", 0, "blocks read and decoded in parallel, 1..256 (default: the number of CPUs)")
		fs.StringVar(&o.blockSize, "block-size", "1M", "unit of reading and zero detection: a power of two from 4k to 64M")
	})
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
	s.SourceFormat = o.format
	bs, err := parseSize(o.blockSize)
	if err != nil || bs < 4<<10 || bs > 64<<20 || bs&(bs-1) != 0 {
		return s, fmt.Errorf("--block-size %s: use a power of two from 4k to 64M", o.blockSize)
	}
	s.BlockSize = int(bs)
	if o.workers < 0 || o.workers > 256 || (o.workers == 0 && fs.Changed("workers")) {
		return s, fmt.Errorf("--workers %d: use 1..256", o.workers)
	}
	if s.OutputFormat() == "qcow2" {
		cs, err := parseSize(o.cluster)
		if err != nil || cs < 512 || cs > 2<<20 || cs&(cs-1) != 0 {
			return s, fmt.Errorf("--cluster-size %s: use a power of two from 512 to 2M", o.cluster)
		}
		s.QCOW2 = job.QCOW2Spec{Compat: o.qcow2Compat, ClusterSize: int(cs)}
		switch o.compress {
		case "true", "1":
			s.QCOW2.Compress = job.CompressAlways // a manifest's "compress": true
		case "false", "0":
			s.QCOW2.Compress = job.CompressNever
		default:
			s.QCOW2.Compress = o.compress
		}
		if fs.Changed("compression") || s.QCOW2.Compress == job.CompressAlways {
			// The spec's defaults settle the rest: --compression alone
			// compresses a file, picks the algorithm of an upload's auto.
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
	progress     string
	showProgress bool // -p
	quiet        bool // -q
	asJSON       bool
	cpuProfile   string
	dryRun       bool
	// progressEvery is --progress-interval.
	progressEvery time.Duration
}

func (o *convertOptions) register(fs *pflag.FlagSet) {
	o.specOptions.register(fs)
	flagGroup(fs, groupOutput, func() { registerDryRun(fs, &o.dryRun) })
	flagGroup(fs, groupDisplay, func() {
		registerProgress(fs, &o.progress, "progress bar with the phase, rate and time left on stderr")
		registerProgressInterval(fs, &o.progressEvery)
		fs.BoolVarP(&o.showProgress, "show-progress", "p", false, "show progress even when stderr is not a terminal, in lines with the time at each phase and every --progress-interval (--progress always; qemu-img's -p)")
		fs.BoolVarP(&o.quiet, "quiet", "q", false, "print only errors and warnings: no bar, no check findings, no summary line (qemu-img's -q); an upload's report still goes to stdout")
		fs.BoolVar(&o.asJSON, "json", false, "print a JSON summary at the end (on stdout, or stderr when the image goes to stdout)")
		fs.BoolP("help", "h", false, "help for convert")
		fs.Bool("version", false, "print the version, the source revision and the build date")
	})
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the conversion to this file")
	_ = fs.MarkHidden("cpuprofile")
}

// registerProgress adds --progress, shared by the commands that draw bars.
func registerProgress(fs *pflag.FlagSet, p *string, what string) {
	fs.StringVar(p, "progress", "auto", what+": auto (bars on a terminal; elsewhere, as in a log, lines with the time), always (lines at each phase too) or never")
}

// display settles -p, -q and --progress into one mode.
func (o *convertOptions) display(fs *pflag.FlagSet) error {
	if err := checkProgressMode(o.progress); err != nil {
		return err
	}
	switch {
	case o.showProgress && o.quiet:
		return errors.New("-p shows the progress bar and -q hides it: give one")
	case o.showProgress && fs.Changed("progress") && o.progress != "always":
		return fmt.Errorf("-p and --progress %s disagree: give one", o.progress)
	case o.quiet && fs.Changed("progress") && o.progress != "never":
		return fmt.Errorf("-q and --progress %s disagree: give one", o.progress)
	case o.showProgress:
		o.progress = "always"
	case o.quiet:
		o.progress = "never"
	}
	return nil
}

func checkProgressMode(mode string) error {
	switch mode {
	case "auto", "always", "never":
		return nil
	}
	return fmt.Errorf("--progress %q: use auto, always or never", mode)
}

// args checks the arguments of a conversion before any file is opened:
// one source, and the output as a second argument when -o is not given
// (qemu-img's habit). A first argument that is no file but close to a
// command's name is taken for a mistyped command.
func (o *convertOptions) args(c *cobra.Command, args []string) error {
	fs := c.Flags()
	switch {
	case len(args) == 0 && fs.NFlag() == 0:
		fmt.Fprint(c.ErrOrStderr(), shortUsage(c))
		return usageError{errors.New("no image given")}
	case len(args) == 0:
		return usageError{errors.New("no source image: convert SRC -o OUT (convert --help)")}
	case missingFile(args[0]) && len(suggestionsFor(c, args[0])) > 0:
		return usageError{fmt.Errorf("unknown command %q, and no file of that name: did you mean %s?", args[0], orList(suggestionsFor(c, args[0])))}
	case len(args) > 2:
		return usageError{fmt.Errorf("convert takes one source image and, without -o, its output; got %d arguments: %s", len(args), strings.Join(args, " "))}
	case len(args) == 2 && fs.Changed("output"):
		return usageError{fmt.Errorf("two outputs, -o %s and %s: give one", o.output, args[1])}
	case len(args) == 2:
		// convert SRC OUT, as qemu-img convert takes it.
		if err := fs.Set("output", args[1]); err != nil {
			return err
		}
	}
	if o.output == "json" {
		return usageError{errors.New("-o json: for a JSON summary give --json (qemu-img's --output=json); for a file named json, give -o ./json")}
	}
	return nil
}

// shortUsage is what a bare `convert` prints: how to call it and the
// commands, without the flags.
func shortUsage(c *cobra.Command) string {
	u := usage(c)
	if i := strings.Index(u, "\nInput flags:"); i >= 0 {
		u = u[:i] + "\n"
	}
	return u + "Run \"convert --help\" for the flags, the examples and the exit codes.\n"
}

func runConvert(ctx context.Context, fs *pflag.FlagSet, o *convertOptions, src string, stdout, stderr io.Writer) error {
	spec, err := o.spec(fs, src)
	if err != nil {
		return usageError{err}
	}
	spec.DryRun = o.dryRun
	if err := o.display(fs); err != nil {
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
	lo := linesFor(o.progress, stderr, o.progressEvery)
	if toStdout && o.asJSON {
		lo = lineOptions{} // stderr takes the JSON summary: nothing else
	}
	ui := newRunUI(o.progress, stderr, o.asJSON, o.quiet, diskLabel(spec.Source), lo)
	res, err := job.Run(ctx, spec, job.Env{Stdout: stdout, Events: ui.event})
	ui.finish(err == nil)
	// A failed import leaves a complete upload: its report is still told.
	var ie *job.ImportError
	if err != nil && !errors.As(err, &ie) {
		return withOutput(err, spec)
	}
	out := stdout
	if toStdout {
		out = stderr
	}
	if o.asJSON {
		if jerr := writeJSON(out, res); jerr != nil {
			return jerr
		}
		return err
	}
	if res.DryRun {
		printPlan(out, spec.Source, res)
		return nil
	}
	if !o.quiet && (!toStdout || o.progress != "never") {
		fmt.Fprintln(stderr, summaryLine(spec.Source, res))
		fmt.Fprint(stderr, remoteLine(res))
		fmt.Fprint(stderr, compressionLine(res))
	}
	if res.Upload != nil {
		// After an import, what it did; else how to import.
		res.Upload.Print(stdout, res.Import == nil)
	}
	printImport(stdout, res.Import)
	return err
}

// summaryLine tells what a conversion did, in one line, in IEC units: its
// time and rate are the conversion's, without the import that followed.
func summaryLine(src string, res *job.Result) string {
	st := res.Stats
	secs := res.Seconds
	if res.Import != nil {
		secs = max(0, secs-res.Import.Seconds)
	}
	return fmt.Sprintf("%s -> %s (%s): %s virtual, %s data, %s zero (%s never read) in %s; system disk size %d GB",
		src, res.Output, res.OutputFormat, units.Bytes(st.Size), units.Bytes(st.Data), units.Bytes(st.Skipped+st.Detected), units.Bytes(st.Skipped),
		units.Took(st.Size, secs), res.SystemDiskSizeGB)
}

// compressionLine tells what compression did to a QCOW2 output that
// compressed (or could have), in a line; empty otherwise.
func compressionLine(res *job.Result) string {
	c := res.Compression
	if c == nil || c.Mode == job.CompressNever {
		return ""
	}
	return "convert: compression: " + c.String() + "\n"
}

// writeJSON writes v as indented JSON, without HTML escaping: presigned
// URLs and bodies keep their &.
func writeJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	e.SetEscapeHTML(false)
	return e.Encode(v)
}

// checkText is the import check's findings for people, a line each.
func checkText(r *job.CheckReport) string {
	var b strings.Builder
	r.WriteText(prefixWriter{&b, "convert: check: "}, job.SeverityWarning)
	fmt.Fprintf(&b, "convert: check: %s\n", r.Summary())
	return b.String()
}
