package job

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"vmimport/check"
	"vmimport/internal/bufpool"
	"vmimport/internal/objstore"
	"vmimport/jdcloud"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/remote"
	"vmimport/stream"
	"vmimport/upload"
	"vmimport/writer"
	"vmimport/writer/qcow2"
)

// A job runs as phases over one state (run), as KubeVirt CDI's data
// processor does: each phase does one step and names the next, so that
// each can be read, and tested, on its own:
//
//	open -> shape -> reserve -> preflight -> checkRules -> openTarget
//	     -> convert -> verifyDigests -> commit -> importImage
//
// A vsphere:// source opens in three more (job/vsphere.go): open ->
// openVM -> checkInventory -> openDisk -> shape.
//
// openTarget goes to finishUpload instead when an earlier run completed
// the upload and stopped before its cleanup. A phase that fails ends the
// job; run then aborts the target if one is open and not committed.
type phase func(ctx context.Context) (phase, error)

// run is one job under way: its spec and environment, and what the phases
// made so far.
type run struct {
	s   Spec
	env Env
	res *Result
	// concurrencyChosen: the spec gave the parts in flight; the plan
	// keeps them.
	concurrencyChosen bool

	// clients are the store clients: Env.Clients, or the run's own
	// (ownClients), closed at its end.
	clients    *Clients
	ownClients bool
	opener     *remote.Opener
	im         reader.Image
	diskGB     int64
	qo         qcow2.Options
	plan       plan
	// held is the share of Env.Budget the job holds.
	held int64
	// opened is the source as it was opened (identifyAtOpen).
	opened      *atOpen
	buffers     *bufpool.Pool // lends the blocks' and parts' buffers
	up          *uploadStart
	rep         *check.Report
	forceImport bool
	target      writer.Target // nil once committed or aborted
	enc         writer.Encoder
	// vs is a vsphere:// source: its session and snapshot (job/vsphere.go).
	vs *vsphereSource

	evMu     sync.Mutex // serializes Events: held only while one is told
	mu       sync.Mutex // guards Result.Warnings
	lastProg time.Time

	stepMu   sync.Mutex // guards the upload's step and its last report
	step     upload.Step
	lastStep time.Time

	retries   atomic.Int64 // store calls tried again
	retryMu   sync.Mutex   // guards lastRetry
	lastRetry time.Time
}

// run runs the phases from open to the end, then lets go of what they
// held.
func (j *run) run(ctx context.Context) error {
	defer j.close()
	for p := phase(j.open); p != nil; {
		var err error
		if p, err = p(ctx); err != nil {
			j.abort(ctx)
			return err
		}
	}
	return nil
}

// close lets go of the source (a vsphere:// source's snapshot and
// session too), the store's connections, the remote opener's connections
// and the share of memory.
func (j *run) close() {
	if j.im != nil {
		j.im.Close()
	}
	if j.vs != nil {
		j.releaseVM(context.Background()) // it has deadlines of its own
	}
	if j.ownClients {
		j.clients.Close()
	}
	if j.opener != nil {
		if j.res.Remote != nil {
			j.res.Remote.Fetched = j.opener.Stats()
		}
		j.opener.Close()
	}
	if j.held > 0 {
		j.env.Budget.release(j.held)
		j.held = 0
	}
}

// abort drops the target of a job that failed (or rehearsed), with a
// fresh context: the run's may be cancelled already.
func (j *run) abort(ctx context.Context) {
	if j.target == nil {
		return
	}
	t := j.target
	j.target = nil
	j.phase(Aborting)
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := t.Abort(actx); err != nil {
		j.warn(fmt.Sprintf("cleaning up: %v", err))
	}
}

// open opens the source (a file or a URL; a vsphere:// VM goes on to
// openVM) and checks what can be checked before anything else: the output
// is not one of its files, its format is the one asserted.
func (j *run) open(ctx context.Context) (phase, error) {
	s := &j.s
	j.phase(Opening)
	ro, err := s.RemoteOptions(j.warn, j.clients)
	if err != nil {
		return nil, &SpecError{err}
	}
	if s.IsRemote() {
		j.res.Remote = &RemoteResult{} // close fills in what was fetched
	}
	if s.IsVSphere() {
		// The VM's inventory first, then its disk on the datastore, read
		// through an opener of the session's (job/vsphere.go).
		return j.openVM, nil
	}
	// Every file the image names may be a URL (under --allow-path rules),
	// so the opener is there for local sources too; it costs nothing
	// until a URL is opened.
	j.opener = remote.New(ctx, ro)
	if j.im, err = reader.Open(s.Source, reader.Options{
		AllowBacking: s.AllowBacking, AllowPaths: s.AllowPaths, Disk: s.Disk, Warn: j.warn, Remote: j.opener,
	}); err != nil {
		return nil, &InputError{err}
	}
	if s.IsRemote() {
		j.res.Remote.Source, _ = j.opener.Pinned(s.Source)
	}
	return j.checkOpened(ctx)
}

// checkOpened checks what can be checked of an open source before anything
// else: its identity is taken, the output is not one of its files, its
// format is the one asserted.
func (j *run) checkOpened(context.Context) (phase, error) {
	s := &j.s
	if err := j.identifyAtOpen(j.im, j.opener); err != nil {
		return nil, &InputError{fmt.Errorf("%s: %w", s.shown(), err)}
	}
	if err := j.refuseSameFile(j.im); err != nil {
		return nil, err
	}
	info := j.im.Info()
	j.res.Source = info
	if err := CheckSourceFormat(s.SourceFormat, info); err != nil {
		return nil, &InputError{err}
	}
	j.emit(Event{Kind: Started, Info: &info})
	return j.shape, nil
}

// shape settles the size of the output (shrunk, the system disk size) and
// plans its memory.
func (j *run) shape(ctx context.Context) (phase, error) {
	s := &j.s
	if s.Shrink {
		// The image is cut to the requested size once nothing but zeros
		// is found beyond it; a size out of range is DiskSize's to report.
		if gb := s.DiskSizeGB; gb >= check.MinDiskGB && gb <= check.MaxDiskGB && gb%check.StepDiskGB == 0 {
			im, err := check.Shrink(ctx, j.im, gb*check.GiB)
			if err != nil {
				return nil, &InputError{fmt.Errorf("%s: %w", s.shown(), err)}
			}
			j.im = im
		}
	}
	diskGB, err := check.DiskSize(j.im.Size(), s.DiskSizeGB)
	if err != nil && s.DiskSizeGB != 0 {
		err = fmt.Errorf("--system-disk-size-gb %d: %w", s.DiskSizeGB, err)
	}
	if err != nil {
		if !s.Force {
			return nil, &InputError{fmt.Errorf("%s: %w (--force goes on anyway)", s.shown(), err)}
		}
		j.warn(fmt.Sprintf("%v; going on because of --force", err))
	}
	j.diskGB, j.res.SystemDiskSizeGB = diskGB, diskGB
	if s.Format == "qcow2" {
		if j.qo, err = s.qcow2Options(j.im.Size()); err != nil {
			return nil, &SpecError{err}
		}
	}
	if j.plan, err = j.planFor(j.im.Size(), j.qo); err != nil {
		return nil, err
	}
	j.res.Plan = j.plan.public(s, j.diskGB)
	return j.reserve, nil
}

// reserve takes the job's share of the budget the jobs of a batch share,
// waiting for it, after fitting the plan into the budget; its buffers come
// from the budget's pool. A job on its own borrows from a pool of its plan.
func (j *run) reserve(ctx context.Context) (phase, error) {
	if j.env.Budget == nil {
		j.buffers = bufpool.New(j.plan.memory)
		return j.preflight, nil
	}
	j.buffers = j.env.Budget.Buffers()
	if err := j.fit(&j.plan); err != nil {
		return nil, err
	}
	checked := j.res.Plan.Checked
	j.res.Plan = j.plan.public(&j.s, j.diskGB)
	j.res.Plan.Checked = checked
	if j.s.DryRun {
		// A dry run reads no block: it takes no memory, waits for none.
		return j.preflight, nil
	}
	j.phase(Waiting)
	if err := j.env.Budget.acquire(ctx, j.plan.memory); err != nil {
		return nil, err
	}
	j.held = j.plan.memory
	j.res.Memory = j.plan.memory
	return j.preflight, nil
}

// preflight checks, for an upload, the credentials and the bucket (and to
// import, the cloud's API), before the image's file systems are read.
func (j *run) preflight(ctx context.Context) (phase, error) {
	if j.s.Kind() != ToBucket {
		return j.checkRules, nil
	}
	j.phase(Preflight)
	up, err := j.connect(ctx)
	if err != nil {
		return nil, err
	}
	j.up = up
	if j.s.DryRun {
		j.res.Plan.Checked = append(j.res.Plan.Checked, fmt.Sprintf("the store at %s took the credentials, and bucket %q a test upload (aborted)", up.c.Where(), up.bucket))
		if up.api != nil {
			j.res.Plan.Checked = append(j.res.Plan.Checked, fmt.Sprintf("the import API at %s (region %s) took the credentials (%s)", up.api.Endpoint(), up.api.Region(), up.api.Creds))
		}
	}
	return j.checkRules, nil
}

// checkRules runs the import check; it comes before the target opens, so
// that an upload stores the findings with the object.
func (j *run) checkRules(ctx context.Context) (phase, error) {
	j.phase(Checking)
	var err error
	j.rep, j.forceImport, err = j.importCheck(ctx, j.im)
	if err != nil {
		return nil, err
	}
	if j.s.DryRun {
		return j.dryRunEnd, nil
	}
	return j.openTarget, nil
}

// dryRunEnd ends a dry run where the output would be opened: what is left
// to check without writing is that a file's folder is there.
func (j *run) dryRunEnd(ctx context.Context) (phase, error) {
	j.res.DryRun = true
	if j.s.Kind() != ToFile {
		return nil, nil
	}
	dir := filepath.Dir(j.s.Output)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("-o %s: there is no folder %s: create it first, or give another output", j.s.Output, dir)
	case err != nil:
		return nil, fmt.Errorf("-o %s: %w", j.s.Output, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("-o %s: %s is not a folder", j.s.Output, dir)
	}
	j.res.Plan.Checked = append(j.res.Plan.Checked, fmt.Sprintf("the folder %s is there", dir))
	return nil, nil
}

// openTarget opens the output: a multipart upload (new or resumed), stdout
// or a file with no name yet.
func (j *run) openTarget(ctx context.Context) (phase, error) {
	s := &j.s
	var err error
	switch {
	case j.up != nil:
		var ut *upload.Target
		if ut, err = j.startUpload(ctx); err == nil {
			j.target = ut
			if ut.Completed() {
				return j.finishUpload, nil
			}
		}
	case s.Kind() == ToStdout:
		if j.env.Stdout == nil {
			return nil, &SpecError{errors.New("-o -: this runner has no standard output")}
		}
		j.target = writer.NewStream(j.env.Stdout)
	default:
		var f *writer.File
		if f, err = writer.CreateFile(s.Output); err == nil {
			j.target = f
		}
	}
	if err != nil {
		return nil, err
	}
	return j.convert, nil
}

// finishUpload finishes an upload an earlier run completed and stopped
// before its cleanup: the object is there as recorded; only the cleanup
// and the report are left, and the import if asked.
func (j *run) finishUpload(ctx context.Context) (phase, error) {
	ut := j.target.(*upload.Target)
	j.notice(fmt.Sprintf("%s: already uploaded by the run before, which stopped before its cleanup; cleaning up", j.res.Output))
	j.phase(Finishing)
	if err := ut.Commit(ctx, nil); err != nil {
		return nil, fmt.Errorf("finishing the completed upload to %s: %w", j.res.Output, err)
	}
	j.target = nil
	j.res.OutputBytes = ut.Size()
	j.res.Upload = ut.Report()
	return j.importImage, nil
}

// convert streams the disk through the encoder into the target.
func (j *run) convert(ctx context.Context) (phase, error) {
	s := &j.s
	j.enc = writer.NewRaw(j.target)
	if s.Format == "qcow2" {
		q, err := j.newQCOW2(j.target, j.qo)
		if err != nil {
			return nil, &SpecError{err}
		}
		j.enc = q
		defer func() { j.res.Compression.fill(q.Compression()) }()
	}
	j.phase(Reading)
	st, err := stream.Run(ctx, j.im, j.enc, stream.Options{
		Workers: j.plan.workers, BlockSize: s.BlockSize, Window: j.plan.window, Progress: j.progress, Buffers: j.buffers,
	})
	j.res.Stats = st
	if err != nil {
		return nil, j.streamError(err)
	}
	return j.verifyDigests, nil
}

// verifyDigests gives the verdict of a digest checked during the pass (an
// OVA's manifest) before anything is committed, and checks the source is
// still as it was opened; a rehearsal ends here, its target dropped.
func (j *run) verifyDigests(ctx context.Context) (phase, error) {
	j.phase(Verifying)
	if err := image.Verify(j.im); err != nil {
		return nil, &InputError{err}
	}
	if err := j.sourceUnchanged(); err != nil {
		return nil, err
	}
	if j.vs != nil {
		j.releaseVM(ctx) // every byte is read: the snapshot can go
	}
	if j.s.Rehearse {
		j.res.OutputBytes = j.enc.Written()
		j.abort(ctx)
		return nil, nil
	}
	return j.commit, nil
}

// commit writes what the encoder still holds and commits the target: the
// file lands under its name, the upload completes.
func (j *run) commit(ctx context.Context) (phase, error) {
	j.phase(Finishing)
	if err := j.enc.Finish(ctx); err != nil {
		return nil, j.streamError(err)
	}
	if ut, ok := j.target.(*upload.Target); ok {
		j.res.Upload = ut.Report()
	}
	j.target = nil
	j.res.OutputBytes = j.enc.Written()
	return j.importImage, nil
}

// importImage imports the uploaded object, when asked: ImportImage with
// the body the upload's report holds, and with Wait a wait on the task.
func (j *run) importImage(ctx context.Context) (phase, error) {
	if j.up == nil || j.up.api == nil || j.res.Upload == nil {
		return nil, nil
	}
	r := j.res.Upload
	im := j.s.Upload.Image
	if (j.rep == nil || j.rep.OS.OSType == "") && im.OSType == "" && im.Platform == "" {
		j.warn(OSHint(r.ImportImage))
	}
	res, err := j.up.api.Import(ctx, r.ImportImage, "s3://"+r.Bucket+"/"+r.Key, j.s.Import, ImportHooks{
		Phase:  j.phase,
		Store:  j.s.Upload.Store,
		Task:   func(t jdcloud.Task) { j.emit(Event{Kind: ImportProgress, Task: &t}) },
		Notice: j.notice,
	})
	j.res.Import = res
	return nil, err
}

// streamError gives a failed pass its context.
func (j *run) streamError(err error) error {
	if errors.Is(err, stream.ErrOptions) {
		return &SpecError{err}
	}
	return fmt.Errorf("converting %s: %w", j.s.shown(), err)
}

// emit tells Env.Events of e. Events are told one at a time (evMu), and
// under no lock of the job's state.
func (j *run) emit(e Event) {
	if j.env.Events == nil {
		return
	}
	j.evMu.Lock()
	defer j.evMu.Unlock()
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

// storeRetry hears a store call tried again (from any goroutine of the
// job): counted in the result, and told as a notice, at most one a
// second, so that a storm of retries is seen and does not flood.
func (j *run) storeRetry(r objstore.Retry) {
	j.emit(Event{Kind: Retried, Retry: &r})
	n := j.retries.Add(1)
	j.mu.Lock()
	j.res.StoreRetries = n
	j.mu.Unlock()
	j.retryMu.Lock()
	now := time.Now()
	due := now.Sub(j.lastRetry) >= time.Second
	if due {
		j.lastRetry = now
	}
	j.retryMu.Unlock()
	if !due {
		return
	}
	what := r.Op
	if r.Part > 0 {
		what += fmt.Sprintf(" part %d", r.Part)
	}
	msg := fmt.Sprintf("the store answered %s to %s (attempt %d of %d): trying again in %s", r.Err, what, r.Attempt, r.Attempts, r.Delay.Round(time.Millisecond))
	if objstore.Status(r.Err) == 0 {
		msg = fmt.Sprintf("%s (attempt %d of %d) got no answer (%s): trying again in %s", what, r.Attempt, r.Attempts, r.Err, r.Delay.Round(time.Millisecond))
	}
	if r.Pacing > 0 {
		msg += fmt.Sprintf("; calls to the store paced %s apart", r.Pacing.Round(time.Millisecond))
	}
	j.notice(fmt.Sprintf("%s (%d retries so far)", msg, n))
}

// progress reports the pass's counts at most ten times a second (it is
// called from the pipeline's one sink goroutine).
func (j *run) progress(st stream.Stats) {
	if now := time.Now(); st.Done == st.Size || now.Sub(j.lastProg) >= 100*time.Millisecond {
		j.lastProg = now
		j.emit(Event{Kind: Progress, Stats: st, Written: j.enc.Written()})
	}
}
