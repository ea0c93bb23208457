// Package batch converts many disks in one run: a few at a time, under one
// memory budget, each through the job layer. One broken disk never stops
// the others; a rerun does only what is left (finished disks are skipped,
// interrupted uploads resume).
package batch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"vmimport/check"
	"vmimport/internal/ident"
	"vmimport/internal/kv"
	"vmimport/job"
	"vmimport/reader/image"
	"vmimport/stream"
	"vmimport/upload"
)

// Item is one disk of a batch.
type Item struct {
	// Line is where the disk is described in the manifest (0: nowhere).
	Line int
	Spec job.Spec
}

// Options shape a batch run.
type Options struct {
	// Jobs is how many disks convert at once (default 2).
	Jobs int
	// Memory is the budget of all running disks together, in bytes
	// (default 1 GiB).
	Memory int64
	// State keeps the bookkeeping that lets a rerun skip finished disks;
	// nil runs every disk.
	State kv.Store
	// Events, if set, hears what happens, from one goroutine at a time.
	Events func(Event)
	// UploadState, if set, keeps the resume state of uploads instead of
	// files (job.Env.State): under a queue, the KV bucket the nodes share.
	// UploadStateWhere names it in messages.
	UploadState      kv.Store
	UploadStateWhere string
	// KeepUploads keeps the upload of a disk that fails or is cancelled,
	// for another run to resume (a queue worker hands a disk back); the
	// caller aborts it once the disk failed for good.
	KeepUploads bool
	// Fence, if set, is asked by an upload before it does what others
	// may take for done or share (job.Env.Fence): a queue worker renews
	// its lease there.
	Fence func(context.Context) error
	// Clients are the store clients the disks share (one pacer per
	// store); nil: Run makes its own, and closes them at its end.
	Clients *job.Clients
	// Budget, if set, is the memory budget (and buffer pool) of the run
	// instead of one of Memory bytes.
	Budget *job.Budget
	// NoLinks keeps presigned download links out of the bookkeeping
	// (State): under a queue it is shared with everyone who can read the
	// queue (Outcome.WithoutLinks).
	NoLinks bool
	// DryRun checks and plans every disk (job.Spec.DryRun) and writes
	// nothing, the bookkeeping included: a disk that would convert ends
	// Planned, one done before Skipped.
	DryRun bool
}

// Defaults.
const (
	DefaultJobs   = 2
	DefaultMemory = 1 << 30
)

// Status is how a disk ended.
type Status string

// Statuses.
const (
	Done    Status = "done"
	Failed  Status = "failed"
	Skipped Status = "skipped" // done by an earlier run, from the same source with the same settings
	// Cancelled: the batch was interrupted before the disk finished (or
	// started); nothing of it was kept.
	Cancelled Status = "cancelled"
	// Planned: a dry run found the disk ready to convert (Outcome.Plan).
	Planned Status = "planned"
)

// Outcome is how one disk ended: what --json prints a line of.
type Outcome struct {
	Line    int     `json:"line,omitempty"`
	Source  string  `json:"source"`
	Output  string  `json:"output"`
	Status  Status  `json:"status"`
	Error   string  `json:"error,omitempty"`
	Seconds float64 `json:"seconds"`
	// Bytes is the size of the output.
	Bytes int64 `json:"bytes"`
	// The single run's summary.
	Image            *image.Info       `json:"image,omitempty"`
	OutputFormat     string            `json:"output_format,omitempty"`
	SystemDiskSizeGB int64             `json:"system_disk_size_gb,omitempty"`
	Stats            *stream.Stats     `json:"stats,omitempty"`
	Warnings         []string          `json:"warnings,omitempty"`
	Target           *upload.Report    `json:"target,omitempty"`
	Check            *check.Report     `json:"check,omitempty"`
	Import           *job.ImportResult `json:"import,omitempty"`
	// SkippedBecause says which earlier run did the disk.
	SkippedBecause string `json:"skipped_because,omitempty"`
	// Plan is how the disk is (or would be, in a dry run) written.
	Plan *job.Plan `json:"plan,omitempty"`
	// SourceID is the source the output was made from, as the run opened
	// it (or as the earlier run of a skipped disk did).
	SourceID *upload.SourceID `json:"-"`

	// Err is the error of a failed disk.
	Err error `json:"-"`
}

// Summary totals a batch.
type Summary struct {
	Disks     int `json:"disks"`
	Done      int `json:"done"`
	Skipped   int `json:"skipped"`
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"`
	// Planned counts the disks a dry run found ready.
	Planned int     `json:"planned,omitempty"`
	Seconds float64 `json:"seconds"`
	// Bytes is the output written by this run; Virtual the virtual size
	// of the disks it converted.
	Bytes   int64 `json:"bytes"`
	Virtual int64 `json:"virtual_bytes"`
	Jobs    int   `json:"jobs"`
	Memory  int64 `json:"memory_budget"`
}

// OK reports whether every disk is done or skipped (or, in a dry run,
// ready).
func (s Summary) OK() bool { return s.Done+s.Skipped+s.Planned == s.Disks }

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// DiskStarted: the disk's job begins.
	DiskStarted EventKind = iota
	// DiskEvent: Job is an event of the disk's job.
	DiskEvent
	// DiskDone: Outcome says how the disk ended (also for skipped and
	// cancelled disks).
	DiskDone
)

// Event is one thing that happened in a batch.
type Event struct {
	Kind    EventKind
	Index   int // of the disk in the batch
	Item    *Item
	Job     job.Event
	Outcome *Outcome
}

// ItemError is a problem with one disk of a batch, found before anything
// starts.
type ItemError struct {
	Line int // in the manifest; 0: not from one
	Err  error
}

func (e *ItemError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return e.Err.Error()
}

func (e *ItemError) Unwrap() error { return e.Err }

// Validate checks every disk's settings before anything starts; that no
// two disks write one output, and that no disk reads what another writes
// (it would read the old or the new file depending on the order), both by
// identity: a file by its resolved folder and name (out/x.raw and
// link/x.raw with link -> out are one file), an object by its normalised
// endpoint, bucket and key. Every disk is looked at: the error joins an
// *ItemError for each that is wrong (errors.As finds the first).
func Validate(items []Item) error {
	var errs []error
	outs := map[ident.ID]int{}
	srcs := map[ident.ID]int{}
	for i := range items {
		if err := validateOne(items, i, outs, srcs); err != nil {
			errs = append(errs, &ItemError{items[i].Line, err})
		}
	}
	return errors.Join(errs...)
}

// validateOne checks the disk at i, and against the outputs and sources
// of the disks before it (which it joins).
func validateOne(items []Item, i int, outs, srcs map[ident.ID]int) error {
	it := &items[i]
	if err := it.Spec.Validate(); err != nil {
		return err
	}
	if it.Spec.Kind() == job.ToStdout {
		return errors.New("-o -: a batch writes files or uploads, not to stdout")
	}
	shown, err := outputName(&it.Spec)
	if err != nil {
		return err
	}
	out, err := it.Spec.OutputIdentity()
	if err != nil {
		return err
	}
	if j, ok := outs[out]; ok {
		return fmt.Errorf("the output %s is also the output of the disk on line %d", shown, items[j].Line)
	}
	if j, ok := srcs[out]; ok {
		return fmt.Errorf("the output %s is the source of the disk on line %d, which would read the old or the new file depending on the order: give another output", shown, items[j].Line)
	}
	outs[out] = i
	for _, id := range it.Spec.SourceIdentities() {
		if j, ok := outs[id]; ok && j != i {
			return fmt.Errorf("the source %s is the output of the disk on line %d: it would read the old or the new file depending on the order; convert that disk first, in a batch of its own", image.Redact(it.Spec.Source), items[j].Line)
		}
		if _, ok := srcs[id]; !ok {
			srcs[id] = i
		}
	}
	return nil
}

// outputName is the output as one place, for messages: an absolute path,
// or the completed s3:// URL.
func outputName(s *job.Spec) (string, error) {
	if s.Kind() == job.ToBucket {
		b, k, err := s.Destination()
		return "s3://" + b + "/" + k, err
	}
	return filepath.Abs(s.Output)
}

// Run converts every disk, Jobs at a time, and returns how each ended
// (in the order of items) and the totals. It returns an error only when
// the batch cannot start (a setting is wrong); a disk that fails is in its
// Outcome. When ctx is cancelled, no disk starts and the running ones are
// aborted; they end Cancelled.
func Run(ctx context.Context, items []Item, o Options) ([]Outcome, Summary, error) {
	if o.Jobs == 0 {
		o.Jobs = DefaultJobs
	}
	if o.Budget != nil {
		o.Memory = o.Budget.Total()
	}
	if o.Memory == 0 {
		o.Memory = DefaultMemory
	}
	sum := Summary{Disks: len(items), Jobs: o.Jobs, Memory: o.Memory}
	if o.Jobs < 1 || o.Jobs > 64 {
		return nil, sum, fmt.Errorf("--jobs %d: use 1..64", o.Jobs)
	}
	if o.Memory < 16<<20 {
		return nil, sum, fmt.Errorf("--memory %d: give at least 16M", o.Memory)
	}
	if err := Validate(items); err != nil {
		return nil, sum, err
	}
	if o.Clients == nil {
		o.Clients = job.NewClients()
		defer o.Clients.Close()
	}
	budget := o.Budget
	if budget == nil {
		budget = job.NewBudget(o.Memory)
	}
	b := &runner{o: o, items: items, budget: budget, out: make([]Outcome, len(items))}
	start := time.Now()
	var g errgroup.Group // not WithContext: one disk's failure must not stop the others
	slots := make(chan struct{}, o.Jobs)
	i := 0
loop:
	for ; i < len(items); i++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		if ctx.Err() != nil {
			break
		}
		idx := i // i outlives the loop: the goroutine needs its own
		g.Go(func() error {
			defer func() { <-slots }()
			b.one(ctx, idx)
			return nil
		})
	}
	g.Wait()
	b.follow(ctx)
	for ; i < len(items); i++ {
		it := &items[i]
		b.out[i] = Outcome{Line: it.Line, Source: image.Redact(it.Spec.Source), Output: it.Spec.Output, Status: Cancelled, Error: "not started: the batch was interrupted"}
		b.emit(Event{Kind: DiskDone, Index: i, Item: it, Outcome: &b.out[i]})
	}
	t := Tally(b.out)
	t.Seconds, t.Jobs, t.Memory = time.Since(start).Seconds(), sum.Jobs, sum.Memory
	return b.out, t, nil
}

type runner struct {
	o      Options
	items  []Item
	budget *job.Budget
	out    []Outcome
	mu     sync.Mutex // serializes Events

	pmu     sync.Mutex
	waiting []*awaited // imports to follow once every disk converted
}

// awaited is a disk whose import was submitted and is to be followed.
type awaited struct {
	i    int
	book *book
	res  *job.Result
}

func (b *runner) emit(e Event) {
	if b.o.Events == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.o.Events(e)
}

// one runs the disk at index i and records its outcome.
func (b *runner) one(ctx context.Context, i int) {
	it := &b.items[i]
	oc := &b.out[i]
	*oc = Outcome{Line: it.Line, Source: image.Redact(it.Spec.Source), Output: it.Spec.Output}
	deferred := false
	defer func() {
		if !deferred {
			b.emit(Event{Kind: DiskDone, Index: i, Item: it, Outcome: oc})
		}
	}()

	book := b.bookkeeping(it)
	if rec, why := book.done(ctx); rec != nil {
		oc.Status, oc.SkippedBecause = Skipped, why
		oc.fill(rec.Result)
		oc.SourceID = &rec.Source
		oc.Seconds = 0
		return
	}
	b.emit(Event{Kind: DiskStarted, Index: i, Item: it})
	if it.Spec.Kind() == job.ToBucket && !b.o.DryRun {
		if rec := book.uploaded(ctx); rec != nil {
			deferred = b.reimport(ctx, i, rec, book)
			return
		}
	}
	spec := it.Spec
	spec.DryRun = b.o.DryRun
	if spec.Kind() == job.ToBucket {
		// An upload that an earlier run left (killed before it could
		// abort) is continued, not refused; a failure aborts it.
		spec.Upload.ResumeImplied = !spec.Upload.Resume
		spec.Upload.Resume = true
		spec.Upload.Keep = spec.Upload.Keep || b.o.KeepUploads
	}
	// The batch follows the import tasks of all disks together, once
	// every disk has converted: a disk does not hold its slot for hours.
	wait := spec.Import.Wait
	spec.Import.Wait = false
	res, err := job.Run(ctx, spec, job.Env{Budget: b.budget, State: b.o.UploadState, StateWhere: b.o.UploadStateWhere, Fence: b.o.Fence, Clients: b.o.Clients, Events: func(e job.Event) {
		b.emit(Event{Kind: DiskEvent, Index: i, Item: it, Job: e})
	}})
	oc.fill(res)
	switch {
	case err == nil && res.DryRun:
		oc.Status = Planned
		return // nothing to record: nothing was done
	case err == nil && wait && res.Import != nil && res.Import.TaskID != "":
		oc.Status = Done
		b.pmu.Lock()
		b.waiting = append(b.waiting, &awaited{i: i, book: book, res: res})
		b.pmu.Unlock()
		deferred = true
		return
	case err == nil:
		oc.Status = Done
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.Cause(ctx))):
		oc.Status, oc.Err, oc.Error = Cancelled, err, "cancelled: the batch was interrupted; nothing was kept"
	default:
		oc.Status, oc.Err, oc.Error = Failed, err, err.Error()
	}
	if !b.o.DryRun {
		book.record(context.WithoutCancel(ctx), oc, res)
	}
}

// fill copies a job's result into the outcome.
func (oc *Outcome) fill(r *job.Result) {
	if r == nil {
		return
	}
	if r.Output != "" {
		oc.Output = r.Output
	}
	oc.Seconds, oc.Bytes = r.Seconds, r.OutputBytes
	if r.Source.Format != "" {
		info := r.Source
		oc.Image = &info
	}
	oc.OutputFormat, oc.SystemDiskSizeGB = r.OutputFormat, r.SystemDiskSizeGB
	if r.Stats.Size > 0 {
		st := r.Stats
		oc.Stats = &st
	}
	oc.Warnings, oc.Target, oc.Check, oc.Import, oc.Plan = r.Warnings, r.Upload, r.Check, r.Import, r.Plan
	if r.SourceID != nil {
		oc.SourceID = r.SourceID
	}
}
