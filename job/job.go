// Package job converts one disk, end to end: open the source, check it
// against the cloud's import rules, open the target (a file, a pipe, a
// multipart upload), stream the blocks through the encoder, verify, and
// commit, or abort so that nothing is left behind. It is the only place that
// orchestrates a conversion: the CLI, a batch, a queue worker and the bench
// all call Run.
//
// A Spec says what to do; Validate checks it before any work starts; Run
// does it, reporting what happens as Events, and returns a Result.
package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"vmimport/check"
	"vmimport/internal/kv"
	"vmimport/jdcloud"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/remote"
	"vmimport/stream"
	"vmimport/upload"
	"vmimport/writer"
	"vmimport/writer/qcow2"
)

// Env is what a job may use besides its Spec.
type Env struct {
	// Stdout receives the image when Spec.Output is "-".
	Stdout io.Writer
	// Events, if set, hears what happens, from one goroutine at a time.
	Events func(Event)
	// Budget, if set, is shared by the jobs that run at once: a job takes
	// its share of memory before it reads a block, and waits for it.
	Budget *Budget
	// State, if set, keeps the resume state of uploads instead of files:
	// under a queue, a key-value bucket the nodes share, so that one node
	// resumes the upload another began. StateWhere names it in messages.
	State      kv.Store
	StateWhere string
}

// Phase names a stretch of a job, for progress displays.
type Phase string

// The phases of a job, in order; a job may skip some.
const (
	Opening   Phase = "opening"
	Waiting   Phase = "waiting for memory"
	Preflight Phase = "checking the bucket"
	Checking  Phase = "checking import rules"
	Reading   Phase = "converting"
	Verifying Phase = "verifying digests"
	Finishing Phase = "finishing" // trailing tables, fsync and rename, or the upload's commit
	// The steps of an upload's commit, in Finishing (upload.Step): the
	// parts still in flight, Complete, the object's size, --verify.
	UploadingParts  Phase = Phase(upload.StepUploading)
	Completing      Phase = Phase(upload.StepCompleting)
	CheckingObject  Phase = Phase(upload.StepChecking)
	VerifyingObject Phase = Phase(upload.StepVerifying)
	Aborting        Phase = "cleaning up"
	// Importing: ImportImage; WaitingImport: following the import task.
	Importing     Phase = "importing"
	WaitingImport Phase = "waiting for the import"
)

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// Started: the source is open; Info describes it.
	Started EventKind = iota
	// PhaseChanged: Phase is the new phase.
	PhaseChanged
	// Progress: Stats counts what the pass did so far (at most ten a
	// second, and one at the end of the pass).
	Progress
	// Checked: Check holds the import check's findings.
	Checked
	// Warning: Message is a finding worth a user's attention.
	Warning
	// Notice: Message tells what the job is doing (a resumed upload, a
	// share of memory lowered to fit).
	Notice
	// ImportProgress: Task is the import task's state, while waiting.
	ImportProgress
	// PhaseProgress: Done of Total bytes of Phase, for the phases after
	// the pass that move bytes (UploadingParts, VerifyingObject); at most
	// ten a second, and one when Done reaches Total.
	PhaseProgress
)

// Event is one thing that happened in a job.
type Event struct {
	Kind    EventKind
	Phase   Phase
	Info    *image.Info
	Stats   stream.Stats
	Check   *check.Report
	Message string
	Task    *jdcloud.Task
	// Done and Total are a PhaseProgress's bytes.
	Done, Total int64
}

// Result is what a job did. Run returns one even when it fails, filled as
// far as the job got.
type Result struct {
	Source           image.Info   `json:"source"`
	Output           string       `json:"output"`
	OutputFormat     string       `json:"output_format"`
	OutputBytes      int64        `json:"output_bytes"`
	SystemDiskSizeGB int64        `json:"system_disk_size_gb"`
	Seconds          float64      `json:"seconds"`
	Stats            stream.Stats `json:"stats"`
	Warnings         []string     `json:"warnings,omitempty"`
	// Upload is what the upload reports after Complete (URLs, the import
	// request and command), for s3:// outputs.
	Upload *upload.Report `json:"target,omitempty"`
	// Check is the import check's verdict (nil with --check off).
	Check *check.Report `json:"check,omitempty"`
	// Import is what the import did (image and task ids, the task's end),
	// with Spec.Import.
	Import *ImportResult `json:"import,omitempty"`
	// Memory is the share of the budget the job held, in bytes.
	Memory int64 `json:"memory,omitempty"`
	// Remote is what reading a remote source did: the version read, the
	// requests and the bytes fetched.
	Remote *RemoteResult `json:"remote,omitempty"`
	// Compression is what compression did to a QCOW2 output.
	Compression *CompressionResult `json:"compression,omitempty"`
}

// SpecError is a setting out of range or in conflict with another; its
// message names the setting by its command-line flag.
type SpecError struct{ Err error }

func (e *SpecError) Error() string { return e.Err.Error() }
func (e *SpecError) Unwrap() error { return e.Err }

// InputError is a source that cannot be read, is corrupt or unsupported, or
// breaks an import rule.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Run converts one disk as spec says. Every setting is validated before
// the source is opened; on any error or cancellation the target is aborted,
// so nothing appears under the output name and no upload is left behind
// (unless spec.Upload.Keep asks to keep it for a resume).
func Run(ctx context.Context, spec Spec, env Env) (*Result, error) {
	spec.SplitSourceCredentials()
	res := &Result{Output: spec.Output, OutputFormat: spec.OutputFormat()}
	if err := spec.Validate(); err != nil {
		return res, err
	}
	j := &run{s: spec.withDefaults(), env: env, res: res, concurrencyChosen: spec.Upload.Concurrency != 0}
	res.OutputFormat = j.s.Format
	start := time.Now()
	err := j.run(ctx)
	res.Seconds = time.Since(start).Seconds()
	if j.held > 0 {
		// The next job of the budget allocates its own buffers: give
		// these (unreachable now that run returned) back to the system
		// before the share is released, or the process holds both until
		// the collector runs.
		debug.FreeOSMemory()
		env.Budget.release(j.held)
	}
	return res, err
}

// run is one job under way.
type run struct {
	s   Spec
	env Env
	res *Result
	// concurrencyChosen: the spec gave the parts in flight; the plan
	// keeps them.
	concurrencyChosen bool
	// held is the share of Env.Budget the job holds.
	held int64

	mu       sync.Mutex // serializes Events and guards warnings
	lastProg time.Time

	stepMu   sync.Mutex // guards the upload's step and its last report
	step     upload.Step
	lastStep time.Time

	// vs is a vsphere:// source being read (job/vsphere.go).
	vs *vsphereSource
}

func (j *run) emit(e Event) {
	if j.env.Events == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.env.Events(e)
}

func (j *run) phase(p Phase) { j.emit(Event{Kind: PhaseChanged, Phase: p}) }

func (j *run) warn(msg string) {
	j.mu.Lock()
	j.res.Warnings = append(j.res.Warnings, msg)
	j.mu.Unlock()
	j.emit(Event{Kind: Warning, Message: msg})
}

func (j *run) notice(msg string) { j.emit(Event{Kind: Notice, Message: msg}) }

func (j *run) progress(st stream.Stats) {
	if now := time.Now(); st.Done == st.Size || now.Sub(j.lastProg) >= 100*time.Millisecond {
		j.lastProg = now
		j.emit(Event{Kind: Progress, Stats: st})
	}
}

func (j *run) run(ctx context.Context) error {
	s := &j.s
	j.phase(Opening)
	ro, err := s.RemoteOptions(j.warn)
	if err != nil {
		return &SpecError{err}
	}
	// Every file the image names may be a URL (under --allow-path rules),
	// so the opener is there for local sources too; it costs nothing
	// until a URL is opened.
	op := remote.New(ctx, ro)
	open := reader.Options{AllowBacking: s.AllowBacking, AllowPaths: s.AllowPaths, Disk: s.Disk, Warn: j.warn, Remote: op}
	path, stats := s.Source, op.Stats
	if s.IsVSphere() {
		// The VM's disk on its datastore, through its chain's files
		// (job/vsphere.go); the snapshot goes once the pass is over.
		if j.vs, err = j.openVSphere(ctx, ro); err != nil {
			return err
		}
		defer j.closeVSphere(ctx, j.vs)
		path, stats = j.vs.files.Top, j.vs.files.Stats
		open.Remote, open.AllowBacking, open.Disk = j.vs.files, true, 0
	}
	if s.IsRemote() {
		j.res.Remote = &RemoteResult{}
		defer func() { j.res.Remote.Fetched = stats() }()
	}
	im, err := reader.Open(path, open)
	if err != nil {
		return &InputError{err}
	}
	defer im.Close()
	switch {
	case j.vs != nil:
		j.res.Remote.Source = j.vs.files.Identity()
	case s.IsRemote():
		j.res.Remote.Source, _ = op.Pinned(s.Source)
	}
	if err := j.refuseSameFile(im); err != nil {
		return err
	}
	info := im.Info()
	j.res.Source = info
	if err := CheckSourceFormat(s.SourceFormat, info); err != nil {
		return &InputError{err}
	}
	j.emit(Event{Kind: Started, Info: &info})

	if s.Shrink {
		// The image is cut to the requested size once nothing but zeros
		// is found beyond it; a size out of range is DiskSize's to report.
		if gb := s.DiskSizeGB; gb >= check.MinDiskGB && gb <= check.MaxDiskGB && gb%check.StepDiskGB == 0 {
			if im, err = check.Shrink(ctx, im, gb*check.GiB); err != nil {
				return &InputError{fmt.Errorf("%s: %w", s.shown(), err)}
			}
		}
	}
	diskGB, err := check.DiskSize(im.Size(), s.DiskSizeGB)
	if err != nil && s.DiskSizeGB != 0 {
		err = fmt.Errorf("--system-disk-size-gb %d: %w", s.DiskSizeGB, err)
	}
	if err != nil {
		if !s.Force {
			return &InputError{fmt.Errorf("%s: %w (--force goes on anyway)", s.shown(), err)}
		}
		j.warn(fmt.Sprintf("%v; going on because of --force", err))
	}
	j.res.SystemDiskSizeGB = diskGB

	var qo qcow2.Options
	if s.Format == "qcow2" {
		if qo, err = s.qcow2Options(im.Size()); err != nil {
			return &SpecError{err}
		}
	}
	plan, err := j.plan(im.Size(), qo)
	if err != nil {
		return err
	}
	if j.env.Budget != nil {
		if err := j.fit(&plan); err != nil {
			return err
		}
		j.phase(Waiting)
		if err := j.env.Budget.acquire(ctx, plan.memory); err != nil {
			return err
		}
		// Run gives it back once the buffers are back with the system.
		j.held = plan.memory
		j.res.Memory = plan.memory
	}

	// An upload checks its credentials and bucket (and, to import, the
	// cloud's API) before the image's file systems are read; the check runs
	// before the target opens, so that an upload stores its findings with
	// the object.
	var up *uploadStart
	if s.Kind() == ToBucket {
		j.phase(Preflight)
		if up, err = j.preflight(ctx); err != nil {
			return err
		}
		defer up.c.Close()
	}
	j.phase(Checking)
	rep, forceImport, err := j.importCheck(ctx, im)
	if err != nil {
		return err
	}
	var target writer.Target
	switch {
	case up != nil:
		target, err = j.startUpload(ctx, up, im, plan, diskGB, rep, forceImport)
	case s.Kind() == ToStdout:
		if j.env.Stdout == nil {
			return &SpecError{errors.New("-o -: this runner has no standard output")}
		}
		target = writer.NewStream(j.env.Stdout)
	default:
		target, err = writer.CreateFile(s.Output)
	}
	if err != nil {
		return err
	}
	if ut, ok := target.(*upload.Target); ok && ut.Completed() {
		// An earlier run completed this upload and was stopped before its
		// cleanup: the object is there as recorded; only the cleanup and
		// the report are left, and the import if asked.
		j.notice(fmt.Sprintf("%s: already uploaded by the run before, which stopped before its cleanup; cleaning up", j.res.Output))
		j.phase(Finishing)
		if err := ut.Commit(ctx, nil); err != nil {
			return fmt.Errorf("finishing the completed upload to %s: %w", j.res.Output, err)
		}
		j.res.OutputBytes = ut.Size()
		if r, ok := ut.Report().(*upload.Report); ok {
			j.res.Upload = r
		}
		if up.api != nil && j.res.Upload != nil {
			return j.doImport(ctx, up.api, rep)
		}
		return nil
	}
	fail := func(err error) error {
		j.phase(Aborting)
		// Abort with a fresh context: the run's may be cancelled already.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if aerr := target.Abort(actx); aerr != nil {
			j.warn(fmt.Sprintf("cleaning up: %v", aerr))
		}
		return err
	}
	var enc writer.Encoder = writer.NewRaw(target)
	if s.Format == "qcow2" {
		q, err := j.newQCOW2(target, qo)
		if err != nil {
			return fail(&SpecError{err})
		}
		enc = q
		defer func() { j.res.Compression.fill(q.Compression()) }()
	}

	j.phase(Reading)
	st, err := stream.Run(ctx, im, enc, stream.Options{
		Workers: plan.workers, BlockSize: s.BlockSize, Window: plan.window, Progress: j.progress,
	})
	j.res.Stats = st
	if err != nil {
		return fail(j.streamError(err))
	}
	// A digest checked during the pass (an OVA's manifest) gives its
	// verdict before anything is committed; nil for other formats.
	j.phase(Verifying)
	if err := image.Verify(im); err != nil {
		return fail(&InputError{err})
	}
	if j.vs != nil {
		j.closeVSphere(ctx, j.vs) // every byte is read: the snapshot can go
	}
	if s.Rehearse {
		j.res.OutputBytes = enc.Written()
		return fail(nil)
	}
	j.phase(Finishing)
	if err := enc.Finish(ctx); err != nil {
		return fail(j.streamError(err))
	}
	j.res.OutputBytes = enc.Written()
	if ut, ok := target.(*upload.Target); ok {
		if r, ok := ut.Report().(*upload.Report); ok {
			j.res.Upload = r
		}
	}
	if up != nil && up.api != nil && j.res.Upload != nil {
		return j.doImport(ctx, up.api, rep)
	}
	return nil
}

// doImport imports the uploaded object: ImportImage with the body the
// upload's report holds, and with Wait a wait on the task.
func (j *run) doImport(ctx context.Context, api *API, rep *check.Report) error {
	r := j.res.Upload
	im := j.s.Upload.Image
	if (rep == nil || rep.OS.OSType == "") && im.OSType == "" && im.Platform == "" {
		j.warn(OSHint(r.ImportImage))
	}
	res, err := api.Import(ctx, r.ImportImage, "s3://"+r.Bucket+"/"+r.Key, j.s.Import, ImportHooks{
		Phase:  j.phase,
		Task:   func(t jdcloud.Task) { j.emit(Event{Kind: ImportProgress, Task: &t}) },
		Notice: j.notice,
	})
	j.res.Import = res
	return err
}

// streamError gives a failed pass its context.
func (j *run) streamError(err error) error {
	if errors.Is(err, stream.ErrOptions) {
		return &SpecError{err}
	}
	return fmt.Errorf("converting %s: %w", j.s.shown(), err)
}
