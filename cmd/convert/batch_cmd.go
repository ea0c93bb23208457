package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"vmimport/batch"
	"vmimport/internal/kv"
	"vmimport/internal/units"
	"vmimport/job"
)

const batchLong = `Converts many disks in one run: --jobs at a time, under one --memory budget
for all of them. MANIFEST (a file, or - for stdin) lists one disk a line,
as JSON Lines or as CSV with a header row (told apart by the content). The
keys are the long flag names of a single conversion, and "source":

  {"source": "web01.vmdk", "output": "s3://migr/web01.qcow2", "output-format": "qcow2"}
  {"source": "db01.vhdx", "output": "out/db01.raw", "system-disk-size-gb": 100}

  source,output,output-format,image-name
  web01.vmdk,s3://migr/web01.qcow2,qcow2,web01

The flags below are defaults for every disk; a record's keys override them.
--jobs, --memory, --state-dir, --json and --progress apply to the batch.
Relative paths in a record (source, output, state-file, allow-path,
source-header @FILE) are the manifest's folder's (the current folder's
for stdin); those of the command line are the current folder's.

Every record is checked before anything starts: every line that does not
parse, names an unknown key (with the keys it may have meant) or gives a
bad setting is told in one pass, with its line number (every line counts,
a CSV's header and blank lines too), and nothing starts. A disk that
cannot be opened or read fails on its own; the others go on.

A rerun of the same manifest does only what is left: a disk whose output is
still there, made from the same source (size, time, first MiB) with the same
settings, is skipped; an upload a killed run left is resumed; a changed
source is done again. The bookkeeping is kept in --state-dir.

Ctrl-C stops new disks, aborts the running ones (nothing under an output
name, no upload left) and prints what was done.

Output: a line per disk as it ends and a table at the end; with --json, a
JSON object per disk as it ends (source, output, status: done, failed,
skipped or cancelled, error, seconds, bytes, and the single run's summary)
and a last object {"summary": ...}.

With --queue nats://HOST:PORT the disks are not converted here: they are
checked the same way, then published to a NATS JetStream work queue for the
workers of any number of nodes (convert worker --help); --wait then follows
them to their end and prints what a local batch prints. Resubmitting queues
no disk twice. convert batch status --queue URL lists every disk of the
queue. --jobs, --memory, --state-dir and --no-state are the workers'.`

const batchExitCodes = `Exit codes:
  0    every disk done or skipped
  1    a disk failed or was cancelled
  2    usage error, or a bad manifest (nothing started)
  130  interrupted
`

// batchOptions are the flags that apply to a batch as a whole.
type batchOptions struct {
	jobs     int
	memory   string
	stateDir string
	noState  bool
	asJSON   bool
	progress string
	dryRun   bool
	// progressEvery is --progress-interval.
	progressEvery time.Duration
	ob            observeOptions
}

func (b *batchOptions) register(fs *pflag.FlagSet) {
	flagGroup(fs, groupBatch, func() {
		fs.IntVar(&b.jobs, "jobs", batch.DefaultJobs, "disks converted at once")
		fs.StringVar(&b.memory, "memory", "1G", "memory budget of all running disks together (blocks in flight and upload parts); a disk waits for its share")
		fs.StringVar(&b.stateDir, "state-dir", "", "where the batch keeps what it did, so a rerun skips finished disks (default: under the user's cache folder, one per manifest)")
		fs.BoolVar(&b.noState, "no-state", false, "keep no bookkeeping: convert every disk, even one a previous run did")
		registerDryRun(fs, &b.dryRun)
	})
	flagGroup(fs, groupDisplay, func() {
		fs.BoolVar(&b.asJSON, "json", false, "print a JSON object per disk as it ends, then a summary object (stdout)")
		registerProgress(fs, &b.progress, "progress bars on stderr, one per running disk and a total")
		registerProgressInterval(fs, &b.progressEvery)
	})
	b.ob.register(fs)
}

// newBatchCmd is convert batch: its own flags, then every flag of a
// conversion as the defaults of the records (the manifest's keys are
// their long names).
func newBatchCmd() *cobra.Command {
	var def specOptions
	var bo batchOptions
	var qo queueOptions
	c := &cobra.Command{
		Use:     "batch MANIFEST",
		Short:   "convert many disks in one run, under one memory budget",
		Long:    batchLong,
		Example: "  convert batch disks.jsonl --jobs 3 --memory 2G --jdcloud-region cn-north-1 --verify\n  convert batch - --json < disks.csv",
		Args:    exactArgs(1, "batch takes one manifest (a file, or - for stdin)"),
		RunE: func(c *cobra.Command, args []string) error {
			if qo.url != "" && !bo.dryRun {
				return runQueueBatch(c.Context(), c.Flags(), &bo, &qo, &def, args[0], c.OutOrStdout(), c.ErrOrStderr())
			}
			return runBatch(c.Context(), c.Flags(), &bo, args[0], c.OutOrStdout(), c.ErrOrStderr())
		},
		Annotations: map[string]string{exitCodesKey: batchExitCodes},
	}
	fs := c.Flags()
	fs.SortFlags = false
	bo.register(fs)
	flagGroup(fs, groupQueue, func() { qo.register(fs) })
	def.register(fs)
	c.AddCommand(newBatchStatusCmd())
	return c
}

// batchFailed is the error of a batch in which a disk failed.
type batchFailed struct{ msg string }

func (b batchFailed) Error() string { return b.msg }
func (b batchFailed) ExitCode() int { return exitFailure }

func runBatch(ctx context.Context, fs *pflag.FlagSet, bo *batchOptions, name string, stdout, stderr io.Writer) (err error) {
	if err := checkProgressMode(bo.progress); err != nil {
		return usageError{err}
	}
	memory, err := parseSize(bo.memory)
	if err != nil {
		return usageError{fmt.Errorf("--memory: %w", err)}
	}

	items, digest, err := readManifest(name, fs)
	if err != nil {
		return usageError{err}
	}
	var state kv.Store
	if bo.dryRun && fs.Changed("queue") {
		// The queue's bookkeeping is in its bucket: not looked at.
		fmt.Fprintln(stderr, "convert: dry run: every disk is checked here, with this machine's credentials; nothing is queued")
		bo.noState = true
	}
	if !bo.noState {
		dir := bo.stateDir
		if dir == "" {
			cache, err := os.UserCacheDir()
			if err != nil {
				return usageError{fmt.Errorf("no cache folder for the batch's bookkeeping (%v): give --state-dir or --no-state", err)}
			}
			dir = filepath.Join(cache, "vmimport", "batches", digest[:16])
		}
		state = kv.Dir(dir)
	}
	// The budget bounds the buffers; the Go runtime is asked to keep the
	// whole heap near it too, so the process stays within budget + 64 MiB.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memory + 40<<20)
	}
	t, err := bo.ob.start("convert batch", stderr, hostName(), nil)
	if err != nil {
		return err
	}
	defer t.close()
	defer func() { err = t.told(ctx, err) }()
	budget := job.NewBudget(memory)
	if t.m != nil {
		t.m.WatchBudget(budget)
	}
	stderr = bo.textOnly(t, stderr)
	ui := newBatchUI(bo.progress, stderr, stdout, bo.asJSON, len(items), linesFor(bo.progress, stderr, bo.progressEvery))
	outs, sum, err := batch.Run(ctx, items, batch.Options{Jobs: bo.jobs, Memory: memory, State: state, Budget: budget, DryRun: bo.dryRun,
		Events: func(e batch.Event) { ui.event(e); t.obs.Batch(e) }})
	ui.finish()
	if err != nil {
		return usageError{err}
	}
	t.summary(sum)
	if err := bo.printSummary(stdout, stderr, outs, sum); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("batch interrupted: %w", ctx.Err())
	}
	if !sum.OK() {
		return batchFailed{fmt.Sprintf("%d of %s failed", sum.Failed+sum.Cancelled, disks(sum.Disks))}
	}
	return nil
}

// printSummary ends a batch's output: the summary line of --json (after
// the disks' lines the UI printed), or the table of every disk.
func (bo *batchOptions) printSummary(stdout, stderr io.Writer, outs []batch.Outcome, sum batch.Summary) error {
	if !bo.asJSON {
		printBatchTable(stderr, outs, sum, bo.dryRun)
		return nil
	}
	e := json.NewEncoder(stdout)
	e.SetEscapeHTML(false)
	return e.Encode(map[string]batch.Summary{"summary": sum})
}

// readManifest parses the manifest and turns every record into a checked
// spec, with the batch's flags as defaults. It returns the items and a
// digest naming the manifest (of its absolute path; of its content for
// stdin).
func readManifest(name string, defaults *pflag.FlagSet) ([]batch.Item, string, error) {
	var r io.Reader
	var h hash.Hash
	var digest string
	if name == "-" {
		h = sha256.New()
		r = io.TeeReader(os.Stdin, h)
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, "", err
		}
		defer f.Close()
		r = f
		abs, err := filepath.Abs(name)
		if err != nil {
			return nil, "", err
		}
		sum := sha256.Sum256([]byte(abs))
		digest = hex.EncodeToString(sum[:])
	}
	label, base := name, ""
	if name == "-" {
		label = "stdin"
	} else if abs, err := filepath.Abs(name); err == nil {
		// Relative paths in the records are the manifest's folder's.
		base = filepath.Dir(abs)
	}
	recs, err := batch.ParseManifest(r, label)
	if err != nil && !errors.Is(err, batch.ErrManifest) {
		return nil, "", err // reading it: named already
	}
	if h != nil {
		digest = hex.EncodeToString(h.Sum(nil))
	}
	if len(recs) == 0 && err == nil {
		return nil, "", fmt.Errorf("%s: no disks in the manifest", label)
	}
	// Every record is looked at, those of the lines that parsed too:
	// every bad line is told in one pass. A bad key of a CSV is told once,
	// on its header's line.
	bad := unjoin(err)
	told := map[string]bool{}
	items := make([]batch.Item, 0, len(recs))
	for _, rec := range recs {
		spec, err := recordSpec(defaults, &rec, base)
		if err != nil {
			line := rec.Line
			var ke *keyError
			if errors.As(err, &ke) && ke.line != 0 {
				line = ke.line
			}
			le := &batch.LineError{Name: label, Line: line, Err: err}
			if !told[le.Error()] {
				told[le.Error()] = true
				bad = append(bad, le)
			}
			continue
		}
		items = append(items, batch.Item{Line: rec.Line, Spec: spec})
	}
	for _, err := range unjoin(batch.Validate(items)) {
		var ie *batch.ItemError
		if errors.As(err, &ie) {
			err = &batch.LineError{Name: label, Line: ie.Line, Err: ie.Err}
		}
		bad = append(bad, err)
	}
	if len(bad) > 0 {
		return nil, "", newBadLines(label, errors.Join(bad...))
	}
	return items, digest, nil
}

// keyError is a record's key that is not a setting, written on line (a
// CSV's header) when that is not the record's line.
type keyError struct {
	line int
	err  error
}

func (k *keyError) Error() string { return k.err.Error() }
func (k *keyError) Unwrap() error { return k.err }

// unjoin is the errors an errors.Join holds (err alone if it is not one;
// none for nil).
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// badLines is a manifest with bad lines, in the order of the lines: main
// tells each on a line of its own, then how many there were.
type badLines struct {
	label string
	errs  []error
}

func newBadLines(label string, err error) badLines {
	errs := unjoin(err)
	line := func(e error) int {
		var le *batch.LineError
		if errors.As(e, &le) {
			return le.Line
		}
		return 0
	}
	slices.SortStableFunc(errs, func(a, b error) int { return line(a) - line(b) })
	return badLines{label: label, errs: errs}
}

func (b badLines) Error() string { return strings.Join(b.lines(), "\n") }

// lines are the messages main prints, a line each.
func (b badLines) lines() []string {
	var out []string
	for _, e := range b.errs {
		out = append(out, e.Error())
	}
	if len(b.errs) > 1 {
		out = append(out, fmt.Sprintf("%s: %d bad lines; nothing was started", b.label, len(b.errs)))
	}
	return out
}

// pathKeys are the keys whose values are paths: relative ones in a
// record are the manifest's folder's.
var pathKeys = map[string]bool{"source": true, "output": true, "state-file": true, "allow-path": true, "source-header": true}

// resolve makes a relative path of key's value the manifest folder base's
// (nothing for stdin, whose base is ""): URLs, -, absolute paths and a
// source header that is no @FILE stay as they are.
func resolve(base, key, v string) string {
	if base == "" || !pathKeys[key] {
		return v
	}
	at := ""
	if key == "source-header" {
		name, ok := strings.CutPrefix(v, "@")
		if !ok {
			return v
		}
		at, v = "@", name
	}
	if v == "" || v == "-" || strings.Contains(v, "://") || filepath.IsAbs(v) {
		return at + v
	}
	return at + filepath.Join(base, v)
}

// recordSpec builds the spec of one record: the flags of a single
// conversion, set first from the batch's command line, then from the
// record's keys (relative paths the folder base's, see resolve).
func recordSpec(defaults *pflag.FlagSet, rec *batch.Record, base string) (job.Spec, error) {
	o := specOptions{inherited: map[string]bool{}}
	fs := pflag.NewFlagSet("record", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.register(fs)
	var err error
	defaults.Visit(func(f *pflag.Flag) {
		if err != nil || fs.Lookup(f.Name) == nil {
			return
		}
		o.inherited[f.Name] = true
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				if err = fs.Set(f.Name, v); err != nil {
					return
				}
			}
			return
		}
		err = fs.Set(f.Name, f.Value.String())
	})
	if err != nil {
		return job.Spec{}, err
	}
	var src string
	for _, f := range rec.Fields {
		if f.Key == "source" {
			if len(f.Values) != 1 {
				return job.Spec{}, errors.New(`"source" takes one image`)
			}
			src = resolve(base, f.Key, f.Values[0])
			continue
		}
		fl := fs.Lookup(f.Key)
		if fl == nil {
			return job.Spec{}, &keyError{line: f.KeyLine, err: fmt.Errorf("unknown key %q: %s", f.Key, keyHint(fs, f.Key))}
		}
		if len(f.Values) > 1 {
			if _, ok := fl.Value.(pflag.SliceValue); !ok {
				return job.Spec{}, fmt.Errorf("key %q takes one value, not a list", f.Key)
			}
		}
		if o.inherited[f.Key] {
			// The record's own value replaces the batch's.
			delete(o.inherited, f.Key)
			if sv, ok := fl.Value.(pflag.SliceValue); ok {
				sv.Replace(nil)
			}
		}
		for _, v := range f.Values {
			if err := fs.Set(f.Key, resolve(base, f.Key, v)); err != nil {
				return job.Spec{}, fmt.Errorf("key %q: %v", f.Key, err)
			}
		}
	}
	if src == "" {
		return job.Spec{}, errors.New(`no "source"`)
	}
	return o.spec(fs, src)
}

// keyHint says what a mistyped key may have meant, as for flags.
func keyHint(fs *pflag.FlagSet, key string) string {
	close := closeFlags(fs, key)
	if editDistance(key, "source") <= 2 {
		close = append([]string{"source"}, close...)
	}
	if len(close) == 0 {
		return "keys are source and the long flag names of a conversion (convert --help)"
	}
	return "did you mean " + orList(close) + "?"
}

// printBatchTable writes the final table and the totals (of a dry run:
// what is ready).
func printBatchTable(w io.Writer, outs []batch.Outcome, sum batch.Summary, dryRun bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "status\tseconds\toutput size\tdisk")
	for _, oc := range outs {
		size := ""
		if oc.Status == batch.Done || oc.Status == batch.Skipped {
			size = units.Bytes(oc.Bytes)
		}
		what := oc.Source + " -> " + oc.Output
		if oc.Error != "" {
			what += ": " + plain(oc.Error)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\n", oc.Status, oc.Seconds, size, firstLine(what))
	}
	tw.Flush()
	if dryRun {
		fmt.Fprintf(w, "dry run, %s: %d ready, %d done before, %d failed in %.1fs; nothing was written\n",
			disks(sum.Disks), sum.Planned, sum.Skipped, sum.Failed, sum.Seconds)
		return
	}
	fmt.Fprintf(w, "%s: %d done, %d skipped, %d failed, %d cancelled in %.1fs; %s written for %s of disks\n",
		disks(sum.Disks), sum.Done, sum.Skipped, sum.Failed, sum.Cancelled, sum.Seconds, units.Bytes(sum.Bytes), units.Bytes(sum.Virtual))
}

// disks counts disks in words: "1 disk", "3 disks".
func disks(n int) string {
	if n == 1 {
		return "1 disk"
	}
	return fmt.Sprintf("%d disks", n)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
