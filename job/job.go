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
	"io"
	"time"

	"vmimport/check"
	"vmimport/internal/kv"
	"vmimport/internal/objstore"
	"vmimport/jdcloud"
	"vmimport/reader/image"
	"vmimport/stream"
	"vmimport/upload"
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
	// Clients, if set, are the store clients of the process, shared by
	// its jobs (one pacer per store); nil: the job makes its own.
	Clients *Clients
	// Fence, if set, is asked by an upload before it does what others
	// may take for done or share: Complete, building the zero object,
	// deleting an object it completed. An error (a queue worker's lost
	// lease) stops the upload there.
	Fence func(context.Context) error
}

// Stats count what the pass did, in bytes.
type Stats = stream.Stats

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
	// PartStored: Part is a part of the upload, now in the store (sent,
	// copied or found); told once per part, from the upload's senders.
	PartStored
	// Retried: Retry is a call to the object store that failed and is
	// tried again; told for every retry (Notice tells them at most once a
	// second).
	Retried
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
	// Written is, with Progress, the bytes the encoder gave the target so
	// far (the output's size once the pass ended, but for the trailing
	// tables).
	Written int64
	// Part is a PartStored's part; Retry a Retried's call.
	Part  *upload.PartStored
	Retry *objstore.Retry
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
	// StoreRetries counts the calls to the object store tried again.
	StoreRetries int64 `json:"store_retries,omitempty"`
	// SourceID is the source as it was opened: the version the output
	// was made from (nil if the job did not get that far).
	SourceID *upload.SourceID `json:"-"`
	// Plan is how the job writes (wrote) the output: format, parts,
	// memory; with DryRun, what it checked too.
	Plan *Plan `json:"plan,omitempty"`
	// DryRun: the job checked and planned, and wrote nothing.
	DryRun bool `json:"dry_run,omitempty"`
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
	j := &run{s: spec.withDefaults(), env: env, res: res, concurrencyChosen: spec.Upload.Concurrency != 0, clients: env.Clients}
	if j.clients == nil {
		j.clients, j.ownClients = NewClients(), true
	}
	res.OutputFormat = j.s.Format
	start := time.Now()
	// Every store call the job makes reports its retries (storeRetry).
	err := j.run(objstore.WithTrace(ctx, &objstore.Trace{Retry: j.storeRetry}))
	res.Seconds = time.Since(start).Seconds()
	return res, err
}
