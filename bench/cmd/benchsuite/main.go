// Command benchsuite times convert against its peers (qemu-img, and
// qemu-img followed by aws s3 cp for uploads) on generated disks: the
// benchmark suite of make bench. It lives apart from convert so that the
// shipped binary does not carry the harness; `convert bench SRC` measures
// a user's own image.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"vmimport/bench"
	"vmimport/internal/units"
)

const help = `Usage:
  benchsuite [--convert bin/convert] [--size 8G] [--small 2G] [--runs 3] [--dir DIR] [--out DIR] [--endpoint URL]
             [--links 1gbit,100mbit] [--cases REGEXP]

benchsuite generates realistic disks from a fixed seed (an MBR disk with an
ext4 file system full of files, random regions and zero gaps), converts them
into every source format with qemu-img, and times convert against qemu-img
case by case, interleaving the two and taking the median of --runs. With
--endpoint URL of a local S3 server (make bench starts versitygw; the default
is $CONVERT_TEST_S3_ENDPOINT) and Debian's awscli, it also times
convert -> s3:// against qemu-img convert followed by aws s3 cp. It writes
results.md, results.json and ratios.svg to a folder of --out named by date and
machine.

The extended-L2 cases (--cases extended-l2) convert QCOW2 images with
extended L2 entries (qemu-img -o extended_l2=on) of a --small disk with 20%
data, at 64 KiB and 2 MiB clusters, against qemu-img and against convert on
a plain QCOW2 of the same data (the "convert: ..." cases: a ratio near 1
means extended L2 entries cost us nothing).

The link cases (--cases link) upload a 2 GiB sparse VMDK with ~400 MB of data
with the S3 server (versitygw) and every tool inside a network namespace whose
loopback is shaped by tc to each of --links: convert against qemu-img
(-O raw, -O qcow2, -O qcow2 -c, some with -m 16 -W) followed by aws s3 cp or
rclone copyto. They need root, ip and tc (iproute2), rclone and awscli; the
namespace and its server are removed at the end, also on ctrl-C. At 100mbit
they take about 15 minutes a run. Needs qemu-img, mkfs.ext4, debugfs and about 4x --size of free space
in --dir. make bench runs it with the defaults.

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "benchsuite: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var (
		size, small, workers string
		o                    = bench.SuiteOptions{Log: os.Stderr}
	)
	fs := pflag.NewFlagSet("benchsuite", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.Convert, "convert", "bin/convert", "the convert binary to time")
	fs.StringVar(&size, "size", "8G", "virtual size of the uncompressed cases")
	fs.StringVar(&small, "small", "2G", "virtual size of the compressed cases (qemu-img -c is serial and slow)")
	fs.IntVar(&o.Runs, "runs", 3, "runs per tool and case (the median is reported)")
	fs.StringVar(&workers, "workers-list", "1,2,4", "worker counts for the scaling case")
	fs.StringVar(&o.Dir, "dir", filepath.Join(os.TempDir(), "convert-bench"), "scratch folder for disks and outputs")
	fs.StringVar(&o.Out, "out", "bench/results", "folder for the results")
	fs.BoolVar(&o.Keep, "keep", false, "keep the generated disks in --dir (they take about 4x --size)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the generated disks")
	fs.StringVar(&o.Endpoint, "endpoint", os.Getenv("CONVERT_TEST_S3_ENDPOINT"), "a local S3 server for the upload cases (empty: none)")
	links := fs.String("links", "1gbit,100mbit", "shaped links of the link cases (tc rates; empty: none); they need root")
	fs.StringVar(&o.VersityGW, "versitygw", "", "versitygw binary for the link cases (default: on PATH, else .ci/versitygw.sh's)")
	render := fs.String("render", "", "measure nothing: rewrite results.md and ratios.svg of this results folder from its results.json")
	cases := fs.String("cases", "", "run only the cases whose names match this regular expression (e.g. 'https' for the remote cases)")
	fs.Usage = func() { fmt.Fprint(os.Stderr, help+fs.FlagUsages()) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("no arguments expected, got %q", fs.Args())
	}
	if *render != "" {
		rep, err := bench.ReadReport(*render)
		if err != nil {
			return err
		}
		return rep.Render(*render)
	}
	var err error
	if *cases != "" {
		if o.Cases, err = regexp.Compile(*cases); err != nil {
			return fmt.Errorf("--cases: %w", err)
		}
	}
	if o.Links, err = bench.ParseLinks(*links); err != nil {
		return fmt.Errorf("--links: %w", err)
	}
	if o.Size, err = units.Parse(size); err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	if o.Small, err = units.Parse(small); err != nil {
		return fmt.Errorf("--small: %w", err)
	}
	for _, w := range strings.Split(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return fmt.Errorf("--workers-list %q: give numbers like 1,2,4", workers)
		}
		o.Workers = append(o.Workers, n)
	}
	if o.Convert, err = filepath.Abs(o.Convert); err != nil {
		return err
	}
	rep, folder, err := bench.RunSuite(ctx, o)
	if err != nil {
		return err
	}
	fmt.Print(rep.Markdown())
	fmt.Printf("\nresults in %s\n", folder)
	return nil
}
