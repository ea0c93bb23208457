package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"vmimport/internal/units"
	"vmimport/job"
)

const benchLong = `convert bench SRC measures, on your own image, without keeping anything:
  read    the image is read and decoded through the pipeline, output discarded:
          decode throughput and the fraction of the disk that is zero;
  raw     the image is converted to a sparse RAW file in --tmpdir, then removed:
          end-to-end throughput to a local file;
  upload  with --to s3://BUCKET/KEY: the RAW output goes into a real multipart
          upload (zero parts copied server-side), which is then aborted: the
          throughput to your bucket, nothing kept (part 1 is never sent).
Throughput is given per second of virtual size and of data actually moved.

The benchmark suite against qemu-img and aws-cli is a separate command,
bench/cmd/benchsuite (make bench), so that convert does not ship it.`

// benchOptions are the flags of convert bench.
type benchOptions struct {
	bs      string
	workers int
	tmpdir  string
	asJSON  bool
	to      string
	co      convertOptions
}

func newBenchCmd() *cobra.Command {
	var o benchOptions
	c := &cobra.Command{
		Use:     "bench SRC",
		Short:   "measure throughput on your own image",
		Long:    benchLong,
		Example: "  convert bench disk.vmdk\n  convert bench disk.vmdk --to s3://my-bucket/bench.raw --jdcloud-region cn-north-1",
		Args:    exactArgs(1, "bench takes one image"),
		RunE: func(c *cobra.Command, args []string) error {
			return runBench(c.Context(), c.Flags(), &o, args, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, "Image (convert bench SRC)", func() {
		fs.IntVar(&o.workers, "workers", 0, "blocks read and decoded in parallel (default: the number of CPUs)")
		fs.StringVar(&o.bs, "block-size", "1M", "unit of reading and zero detection")
		fs.StringVar(&o.tmpdir, "tmpdir", "", "`folder` for the temporary RAW output (default: the system's temporary folder)")
		fs.StringVar(&o.to, "to", "", "also measure an upload to s3://BUCKET/KEY, which is aborted at the end (nothing is kept); the upload flags apply")
	})
	o.co.upload.register(fs)
	flagGroup(fs, groupDisplay, func() { fs.BoolVar(&o.asJSON, "json", false, "print JSON (convert bench SRC)") })
	return c
}

func runBench(ctx context.Context, fs *pflag.FlagSet, bo *benchOptions, args []string, stdout, stderr io.Writer) error {
	bs, workers, tmpdir, asJSON, to, co := bo.bs, bo.workers, bo.tmpdir, bo.asJSON, bo.to, &bo.co
	if tmpdir == "" {
		tmpdir = os.TempDir()
	}
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	blockSize, err := parseSize(bs)
	if err != nil {
		return usageError{fmt.Errorf("--block-size: %w", err)}
	}
	base := job.Spec{Source: args[0], Workers: workers, BlockSize: int(blockSize), Check: "off"}
	if err := base.Validate(); err != nil && !strings.Contains(err.Error(), "no output") {
		return usageError{err}
	}
	var up *job.Spec
	if to != "" {
		if !strings.HasPrefix(to, "s3://") {
			return usageError{fmt.Errorf("--to %q: give s3://BUCKET/KEY", to)}
		}
		s := base
		s.Output = to
		if err := co.upload.spec(fs, &s, (*pflag.FlagSet).Changed); err != nil {
			return usageError{err}
		}
		// The whole pass into a real upload, then Abort: nothing is kept.
		s.Rehearse = true
		if err := s.Validate(); err != nil {
			return usageError{err}
		}
		up = &s
	}
	return benchImage(ctx, base, tmpdir, asJSON, up, stdout, stderr)
}

// mibps is a rate of the table (MB/s, as the JSON has it) in MiB/s; "-"
// for a phase too short to tell a rate.
func mibps(mbps, seconds float64) string {
	if seconds < units.MinRateSeconds {
		return "-"
	}
	return fmt.Sprintf("%.0f", mbps*1e6/(1<<20))
}

type benchPhase struct {
	Phase        string  `json:"phase"`
	Seconds      float64 `json:"seconds"`
	VirtualMBps  float64 `json:"virtual_mb_per_s"`
	DataMBps     float64 `json:"data_mb_per_s"`
	OutputBytes  int64   `json:"output_bytes,omitempty"`
	ZeroFraction float64 `json:"zero_fraction"`
}

func benchImage(ctx context.Context, base job.Spec, tmpdir string, asJSON bool, up *job.Spec, stdout, stderr io.Writer) error {
	src, workers, blockSize := base.Source, base.Workers, base.BlockSize
	var phases []benchPhase
	phase := func(name string, st job.Stats, d time.Duration, outBytes int64) {
		s := max(d.Seconds(), 1e-9)
		phases = append(phases, benchPhase{Phase: name, Seconds: d.Seconds(), VirtualMBps: float64(st.Size) / 1e6 / s,
			DataMBps: float64(st.Data) / 1e6 / s, OutputBytes: outBytes, ZeroFraction: float64(st.Skipped+st.Detected) / float64(max(st.Size, 1))})
	}
	// read: the pipeline alone, every block dropped.
	start := time.Now()
	read, err := job.Read(ctx, base)
	if err != nil {
		return err
	}
	phase("read", read.Stats, time.Since(start), 0)
	info := read.Source

	// raw: a real conversion to a sparse file, then removed.
	raw := base
	raw.Output = filepath.Join(tmpdir, "convert-bench.raw")
	defer os.Remove(raw.Output)
	start = time.Now()
	res, err := job.Run(ctx, raw, job.Env{})
	if err != nil {
		return err
	}
	phase("raw", res.Stats, time.Since(start), res.OutputBytes)
	os.Remove(raw.Output)

	if up != nil {
		start = time.Now()
		res, err := job.Run(ctx, *up, job.Env{Events: func(e job.Event) {
			if e.Kind == job.Notice || e.Kind == job.Warning {
				fmt.Fprintf(stderr, "convert: %s\n", e.Message)
			}
		}})
		if err != nil {
			return err
		}
		phase("upload", res.Stats, time.Since(start), res.OutputBytes)
	}

	if asJSON {
		return writeJSON(stdout, map[string]any{"source": info, "workers": workers, "block_size": blockSize, "phases": phases})
	}
	fmt.Fprintf(stdout, "%s: %s, %s virtual, %.0f%% zero; %d workers, %s blocks\n", src, info.Format, units.Bytes(info.VirtualSize), phases[0].ZeroFraction*100, workers, units.Bytes(int64(blockSize)))
	fmt.Fprintf(stdout, "%-6s %9s %16s %13s\n", "phase", "seconds", "MiB/s (virtual)", "MiB/s (data)")
	for _, p := range phases {
		fmt.Fprintf(stdout, "%-6s %9.2f %16s %13s\n", p.Phase, p.Seconds, mibps(p.VirtualMBps, p.Seconds), mibps(p.DataMBps, p.Seconds))
	}
	return nil
}
