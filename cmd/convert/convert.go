package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
	"vmimport/internal/units"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"vmimport/check"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/stream"
	"vmimport/upload"
	"vmimport/writer"
	"vmimport/writer/qcow2"
)

type convertOptions struct {
	readerOptions
	outFormat string
	// QCOW2 output.
	qcow2Compat string
	cluster     string
	compress    bool
	compression string
	qcow2       qcow2.Options // validated, once the virtual size is known
	output      string
	workers     int
	blockSize   string
	progress    string
	asJSON      bool
	cpuProfile  string
	diskSizeGB  int64
	force       bool
	upload      uploadOptions
	check       checkOptions
}

func convertFlags(o *convertOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("convert", pflag.ContinueOnError)
	fs.SortFlags = false
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
	fs.StringVar(&o.progress, "progress", "auto", "progress bar on stderr: auto (when stderr is a terminal), always, never")
	fs.BoolVar(&o.asJSON, "json", false, "print a JSON summary at the end (on stdout, or stderr when the image goes to stdout)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the conversion to this file")
	_ = fs.MarkHidden("cpuprofile")
	o.register(fs)
	o.upload.register(fs)
	o.check.register(fs)
	return fs
}

// fillImport completes the ImportImage fields from what the import check
// found, where the user did not set them, and records --force.
func (o *convertOptions) fillImport(m *upload.ImportMeta, changed func(string) bool) {
	if r := o.check.Report(); r != nil {
		f := r.ImportFields()
		for _, x := range []struct {
			flag string
			dst  *string
			val  string
		}{
			{"architecture", &m.Architecture, f.Architecture},
			{"os-type", &m.OSType, f.OSType},
			{"platform", &m.Platform, f.Platform},
			{"os-version", &m.OSVersion, f.OSVersion},
		} {
			if !changed(x.flag) && x.val != "" {
				*x.dst = x.val
			}
		}
	}
	m.ForceImport = o.check.ForceImport()
}

// maxOutputSize bounds the size of the output image for a virtual size,
// for targets that plan ahead (an upload's part grid).
func (o *convertOptions) maxOutputSize(virtual int64) int64 {
	if o.outFormat == "qcow2" {
		if n, err := qcow2.MaxSize(o.qcow2); err == nil {
			return n
		}
	}
	return virtual
}

// summary is what --json prints at the end of a conversion.
type summary struct {
	Source           image.Info   `json:"source"`
	Output           string       `json:"output"`
	OutputFormat     string       `json:"output_format"`
	OutputBytes      int64        `json:"output_bytes"`
	SystemDiskSizeGB int64        `json:"system_disk_size_gb"`
	Seconds          float64      `json:"seconds"`
	Stats            stream.Stats `json:"stats"`
	Warnings         []string     `json:"warnings,omitempty"`
	// Target holds what the target reports after Commit (an upload's URLs
	// and import command), if it reports anything.
	Target any `json:"target,omitempty"`
	// Check is the import readiness check's verdict (nil with --check off).
	Check *check.Report `json:"check,omitempty"`
}

// reporter is implemented by targets with something to tell after Commit.
type reporter interface {
	Report() any
	// Print writes the report for people.
	Print(w io.Writer)
}

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o convertOptions
	fs := convertFlags(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: convert SRC [-O raw|qcow2] -o OUT|- [flags]\n\nFlags:\n")
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
	if o.output == "" {
		return usageError{errors.New("no output: give -o FILE, or -o - for stdout")}
	}
	toStdout := o.output == "-"
	var clusterSize int64
	switch o.outFormat {
	case "raw":
		for _, name := range []string{"compress", "compression", "cluster-size", "qcow2-compat"} {
			if fs.Changed(name) {
				return usageError{fmt.Errorf("--%s applies to -O qcow2", name)}
			}
		}
	case "qcow2":
		if toStdout {
			return usageError{fmt.Errorf("-O qcow2 -o -: %w; or use -O raw for pipes", writer.ErrHeadOnStream)}
		}
		var err error
		if clusterSize, err = parseSize(o.cluster); err != nil {
			return usageError{fmt.Errorf("--cluster-size: %w", err)}
		}
	default:
		return usageError{fmt.Errorf("-O %s: output format not supported (use raw or qcow2)", o.outFormat)}
	}
	switch o.progress {
	case "auto", "always", "never":
	default:
		return usageError{fmt.Errorf("--progress %q: use auto, always or never", o.progress)}
	}
	bs, err := parseSize(o.blockSize)
	if err != nil {
		return usageError{fmt.Errorf("--block-size: %w", err)}
	}
	if toStdout {
		if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usageError{errors.New("refusing to write a disk image to a terminal: redirect stdout or give -o FILE")}
		}
	}
	var warnings []string
	ropts := o.options(stderr)
	warn := ropts.Warn
	ropts.Warn = func(msg string) { warnings = append(warnings, msg); warn(msg) }

	src := fs.Arg(0)
	im, err := reader.Open(src, ropts)
	if err != nil {
		return inputError{err}
	}
	defer im.Close()
	if err := refuseSameFile(im, o.output, stdout); err != nil {
		return usageError{err}
	}

	if im, err = o.check.shrinkImage(ctx, im, o.diskSizeGB); err != nil { // --shrink: im.Size() becomes the requested size
		return inputError{fmt.Errorf("%s: %w", src, err)}
	}
	diskGB, err := check.DiskSize(im.Size(), o.diskSizeGB)
	if err != nil {
		if !o.force {
			return inputError{fmt.Errorf("%s: %w (--force goes on anyway)", src, err)}
		}
		ropts.Warn(fmt.Sprintf("%v; going on because of --force", err))
	}

	if o.outFormat == "qcow2" {
		o.qcow2 = qcow2.Options{Compat: o.qcow2Compat, ClusterSize: int(clusterSize), VirtualSize: im.Size()}
		if o.compress || fs.Changed("compression") {
			o.qcow2.Compression = o.compression
		}
		if o.qcow2, err = o.qcow2.Validate(); err != nil {
			return usageError{err}
		}
		// The QCOW2 encoder takes whole clusters: blocks are at least one.
		bs = int64(qcow2.BlockSize(int(bs), o.qcow2.ClusterSize))
	}

	// The target first: an upload checks its credentials and bucket before
	// the image's file systems are read (the target is aborted if the check
	// then stops the run).
	target, err := openTarget(ctx, &o, im, stdout, stderr)
	if err != nil {
		return err
	}
	if err := importCheck(ctx, &o, im, src, stderr); err != nil {
		target.Abort(context.WithoutCancel(ctx))
		return err
	}
	if ut, ok := target.(*upload.Target); ok {
		ut.SetImport(func(m *upload.ImportMeta) { o.fillImport(m, fs.Changed) })
		if ut.Completed() { // an earlier run completed it: only its cleanup is left
			return finishCompleted(ctx, ut, &o, summary{Source: im.Info(), Output: o.output, OutputFormat: o.outFormat, Warnings: warnings, Check: o.check.Report()}, stdout, stderr)
		}
	}
	var enc writer.Encoder = writer.NewRaw(target)
	if o.outFormat == "qcow2" {
		q, err := qcow2.NewEncoder(target, o.qcow2)
		if err != nil {
			target.Abort(ctx)
			return usageError{err}
		}
		enc = q
	}

	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	bar := newProgress(o.progress, stderr, im.Size())
	start := time.Now()
	st, err := stream.Run(ctx, im, enc, stream.Options{
		Workers:   o.workers,
		BlockSize: int(bs),
		Transform: enc.Transform(),
		Progress:  bar.update,
	})
	if err == nil {
		// A digest checked during the pass (an OVA's manifest) gives its
		// verdict before anything is committed; nil for other formats.
		if err = image.Verify(im); err != nil {
			err = inputError{err}
		}
	}
	if err == nil {
		err = enc.Finish(ctx)
	}
	bar.finish(err == nil)
	if err != nil {
		// Abort with a fresh context: the run's may be cancelled already.
		abortCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if aerr := target.Abort(abortCtx); aerr != nil {
			fmt.Fprintf(stderr, "convert: cleaning up: %v\n", aerr)
		}
		if errors.Is(err, stream.ErrOptions) {
			return usageError{err}
		}
		return fmt.Errorf("converting %s: %w", src, err)
	}
	elapsed := time.Since(start)
	sum := summary{
		Source: im.Info(), Output: o.output, OutputFormat: o.outFormat, OutputBytes: enc.Written(),
		SystemDiskSizeGB: diskGB, Seconds: elapsed.Seconds(), Stats: st, Warnings: warnings,
		Check: o.check.Report(),
	}
	out := stdout
	if toStdout {
		out = stderr
	}
	rep, hasReport := target.(reporter)
	if hasReport {
		sum.Target = rep.Report()
	}
	if o.asJSON {
		e := json.NewEncoder(out)
		e.SetIndent("", "  ")
		return e.Encode(sum)
	}
	if !toStdout || o.progress != "never" {
		fmt.Fprintf(stderr, "%s -> %s (%s): %s virtual, %s data, %s zero (%s never read) in %.1fs (%.0f MB/s); system disk size %d GB\n",
			src, o.output, o.outFormat, units.Bytes(st.Size), units.Bytes(st.Data), units.Bytes(st.Skipped+st.Detected), units.Bytes(st.Skipped),
			elapsed.Seconds(), float64(st.Size)/1e6/max(elapsed.Seconds(), 1e-9), diskGB)
	}
	if hasReport {
		rep.Print(stdout)
	}
	return nil
}
