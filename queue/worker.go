package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"vmimport/batch"
	"vmimport/check"
	"vmimport/internal/kv"
	"vmimport/internal/units"
	"vmimport/job"
	"vmimport/reader/image"
	"vmimport/upload"
)

// WorkerOptions shape a worker.
type WorkerOptions struct {
	// Name names the worker in statuses and leases (default HOST-PID).
	Name string
	// Jobs is how many disks convert at once (default 2).
	Jobs int
	// Memory is the budget of the running disks together (default 1 GiB).
	Memory int64
	// AckWait is how long the server waits for a sign of life from the
	// worker of a disk before it gives the disk to another (default 60s).
	// It is a setting of the consumer all workers share: the last worker
	// started sets it.
	AckWait time.Duration
	// MaxDeliveries bounds the deliveries of a disk (default 5): a disk
	// whose worker died, or that failed for a reason worth a retry, that
	// many times fails for good.
	MaxDeliveries int
	// RetryDelay is the wait before the first retry of a transient
	// failure (default 10s); it doubles with every delivery, up to 5 min.
	RetryDelay time.Duration
	// DrainTimeout is how long running disks may go on once ctx is
	// cancelled (SIGTERM) before they are handed back to the queue, their
	// uploads kept for the next worker (default 20s).
	DrainTimeout time.Duration
	// Log receives a line for every thing that happens. May be nil.
	Log func(string)
	// Events, if set, hears every thing that happens, as data: for
	// metrics and machine-readable logs. From the deliveries' goroutines,
	// at once.
	Events func(WorkerEvent)
	// Ready, if set, hears the worker's consumer made (true: the worker
	// takes disks) and the worker stopping (false).
	Ready func(bool)
	// Clients are the store clients of the worker's disks (one pacer per
	// store for all of them); nil: the worker makes its own.
	Clients *job.Clients
	// Limits bound what a message may make the worker read, write and
	// reach (Admit); empty, they allow nothing.
	Limits Limits
	// ProgressEvery is how often a running disk's progress is logged (its
	// phase, bytes, rate): a log shows a large disk moving. 0: never.
	ProgressEvery time.Duration
	// ShareLinks keeps the presigned download links of the disks done in
	// their statuses and bookkeeping, which everyone who can read the
	// queue sees; without it they are left out (convert import signs a
	// fresh one).
	ShareLinks bool
	// Budget, if set, is the memory budget of the worker's disks instead
	// of one of Memory bytes (for a caller that watches it).
	Budget *job.Budget
}

// Defaults of a worker.
const (
	DefaultAckWait       = 60 * time.Second
	DefaultMaxDeliveries = 5
	DefaultRetryDelay    = 10 * time.Second
	DefaultDrainTimeout  = 20 * time.Second
	maxRetryDelay        = 5 * time.Minute
)

var (
	errDrain  = errors.New("the worker is stopping")
	errFenced = errors.New("the queue was out of reach too long to keep the lease")
)

func (o *WorkerOptions) defaults() error {
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if o.Jobs == 0 {
		o.Jobs = batch.DefaultJobs
	}
	if o.Budget != nil {
		o.Memory = o.Budget.Total()
	}
	if o.Memory == 0 {
		o.Memory = batch.DefaultMemory
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxDeliveries == 0 {
		o.MaxDeliveries = DefaultMaxDeliveries
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	switch {
	case o.Jobs < 1 || o.Jobs > 64:
		return fmt.Errorf("--jobs %d: use 1..64", o.Jobs)
	case o.Memory < 16<<20:
		return fmt.Errorf("--memory %d: give at least 16M", o.Memory)
	case o.AckWait < time.Second:
		return fmt.Errorf("--ack-wait %s: give at least 1s", o.AckWait)
	case o.MaxDeliveries < 1:
		return fmt.Errorf("--max-deliveries %d: give at least 1", o.MaxDeliveries)
	case o.RetryDelay < 0 || o.DrainTimeout < 0:
		return errors.New("--retry-delay and --drain-timeout: give positive durations")
	}
	return o.Limits.Validate()
}

// worker is a running Work.
type worker struct {
	q      *Queue
	o      WorkerOptions
	cons   jetstream.Consumer
	budget *job.Budget
	store  *Bucket
	// clients are the store clients of the worker's disks: one pacer per
	// store for all of them.
	clients *job.Clients
	tick    time.Duration
}

// Work pulls disks from the queue and converts them, Jobs at a time under
// one Memory budget, until ctx is cancelled; then it takes no new disk,
// lets the running ones finish for DrainTimeout, hands the others back
// (their uploads kept for the next worker) and returns nil.
//
// While a disk runs, the worker tells the server every few seconds that it
// is still at work (so that no disk, however large, times out) and renews
// the lease of the disk's output. A worker that dies stops both: after
// AckWait the server gives the disk to another worker, which takes the
// lease over and resumes the upload from the state in the bucket. A disk
// that fails for a reason worth a retry (network, server) goes back with a
// growing delay, MaxDeliveries times at most; a broken image or a bad
// setting fails at once, for good.
func (q *Queue) Work(ctx context.Context, o WorkerOptions) error {
	if err := o.defaults(); err != nil {
		return err
	}
	cctx, cancel := opCtx(ctx)
	cons, err := q.js.CreateOrUpdateConsumer(cctx, q.name, jetstream.ConsumerConfig{
		Durable:       consumerName,
		Description:   "convert workers",
		FilterSubject: q.name + ".disk.*",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		// The delivery limit is the workers' (MaxDeliveries): the worker
		// that gets one delivery too many fails the disk and removes its
		// message, which a server-side limit would leave in the stream.
		MaxDeliver: -1,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("queue %s: the workers' consumer: %w", q.name, err)
	}
	budget := o.Budget
	if budget == nil {
		budget = job.NewBudget(o.Memory)
	}
	w := &worker{q: q, o: o, cons: cons, budget: budget, store: q.Store(), clients: o.Clients,
		tick: min(max(o.AckWait/4, 50*time.Millisecond), 2*time.Second)}
	if w.clients == nil {
		w.clients = job.NewClients()
		defer w.clients.Close()
	}
	if o.Ready != nil {
		o.Ready(true)
		defer o.Ready(false)
	}
	w.note("taking disks from queue %s (%d at a time, memory %d MiB, ack wait %s)", q.url+"/"+q.name, o.Jobs, o.Memory>>20, o.AckWait)

	// Running disks outlive ctx by DrainTimeout: they run under base.
	base, stopAll := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopAll(nil)
	slots := make(chan struct{}, o.Jobs)
	var wg sync.WaitGroup
	pause := time.Duration(0)
loop:
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		msg, err := w.next(ctx)
		if msg == nil {
			<-slots
			if err != nil && ctx.Err() == nil {
				pause = min(max(2*pause, 250*time.Millisecond), 5*time.Second)
				w.note("waiting for the queue: %v", err)
				select {
				case <-time.After(pause):
				case <-ctx.Done():
				}
			}
			continue
		}
		pause = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			release := func() { once.Do(func() { <-slots }) }
			defer release()
			w.handle(base, msg, release)
		}()
	}
	if n := len(slots); n > 0 {
		w.note("stopping: %d disk(s) running get %s to finish, then go back to the queue", n, o.DrainTimeout)
	}
	t := time.AfterFunc(o.DrainTimeout, func() { stopAll(errDrain) })
	wg.Wait()
	t.Stop()
	w.note("stopped")
	return nil
}

// next fetches one message; nil, nil when none came within a few seconds.
func (w *worker) next(ctx context.Context) (jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := w.cons.Next(jetstream.FetchContext(fctx))
	if err == nil {
		return msg, nil
	}
	if ctx.Err() != nil || fctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
		return nil, nil
	}
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		// Deleted (with its stream?): make it again.
		if c, cerr := w.q.js.CreateOrUpdateConsumer(ctx, w.q.name, w.cons.CachedInfo().Config); cerr == nil {
			w.cons = c
		}
	}
	return nil, err
}

// progress is what a running disk reports into its status.
type progress struct {
	mu         sync.Mutex
	phase      string
	done, size int64
}

// delivery is one delivery of a disk's message, from its arrival to its
// end: done, failed, retried later, handed back, or left to the worker
// that took its lease over. handle runs its steps in order: read the
// message (parse), take the lease and say so (start), convert (run), and
// settle the message and the status by how it ended (end).
type delivery struct {
	w    *worker
	msg  jetstream.Msg
	num  int // of the message's deliveries, from 1
	m    message
	spec job.Spec
	st   *Status
	l    *lease
	// store is the queue's bucket fenced by the lease: every shared write
	// of the delivery goes through it.
	store kv.Store
	prog  progress
	// oc is how the disk ended; cause why its job's context ended, if it
	// did.
	oc    batch.Outcome
	cause error
}

// handle runs one delivery of a disk to its end. release gives back the
// disk's slot once it no longer converts.
func (w *worker) handle(base context.Context, msg jetstream.Msg, release func()) {
	d := &delivery{w: w, msg: msg, num: 1}
	if !d.parse() || !d.start(base) {
		return
	}
	d.run(base, release)
	// What follows must be written even when the drain is over.
	d.end(context.WithoutCancel(base))
}

// tell tells e, an event of the disk, with the disk's fields filled in.
func (d *delivery) tell(e WorkerEvent) {
	e.Key, e.Line, e.Source, e.Output, e.Delivery = d.m.Key, d.m.Line, image.Redact(d.spec.Source), d.spec.Output, d.num
	d.w.tell(e)
}

// logf logs a line about the disk.
func (d *delivery) logf(format string, args ...any) {
	d.tell(WorkerEvent{Kind: Note, Message: fmt.Sprintf(format, args...)})
}

// ended tells how the delivery ended, with a line.
func (d *delivery) ended(end End, oc *batch.Outcome, format string, args ...any) {
	d.tell(WorkerEvent{Kind: Ended, End: end, Outcome: oc, Message: fmt.Sprintf(format, args...)})
}

// parse reads the message; an unreadable one is dropped for good.
func (d *delivery) parse() bool {
	if meta, err := d.msg.Metadata(); err == nil {
		d.num = int(meta.NumDelivered)
	}
	if err := json.Unmarshal(d.msg.Data(), &d.m); err != nil || d.m.Version != messageVersion || d.m.Key == "" {
		d.w.tell(WorkerEvent{Kind: Ended, End: EndUnreadable, Delivery: d.num, Message: fmt.Sprintf("dropping an unreadable message on %s: %v", d.msg.Subject(), err)})
		d.msg.TermWithReason("unreadable message")
		return false
	}
	d.spec = d.m.Spec
	d.tell(WorkerEvent{Kind: Received})
	return true
}

// start admits the message (what it asks must be within the worker's
// limits: refused for good otherwise), takes the lease of the disk's
// output (or puts the message back for later when another worker holds
// it), gives up on a disk delivered too often and marks the others
// running. Every shared write from the lease on is made under it
// (d.store).
func (d *delivery) start(ctx context.Context) bool {
	w, o, spec := d.w, &d.w.o, &d.spec
	if err := Admit(*spec, o.Limits); err != nil {
		// Input from the network: checked before anything is done with
		// it, and refused for good (its status written by no holder: no
		// worker runs it).
		d.st, _ = d.status(ctx)
		w.refuse(ctx, d.msg, d.st, err, d.logf, func(oc *batch.Outcome) { d.ended(EndRefused, oc, "refused: %v", err) })
		return false
	}
	l, wait, err := w.q.acquire(ctx, leaseName(spec), d.m.Key, o.Name, o.AckWait)
	if err != nil {
		if !errors.Is(err, ErrLeaseBusy) {
			wait = 2 * time.Second
		}
		d.msg.NakWithDelay(wait + 100*time.Millisecond)
		d.ended(EndBusy, nil, "%v: again in %s", err, wait.Round(time.Millisecond))
		return false
	}
	d.l, d.store = l, kv.Fenced(w.store, l)
	st, before := d.status(ctx)
	d.st = st
	if before.State == Running && before.Delivery < d.num {
		// An earlier delivery began the disk and never ended it.
		d.tell(WorkerEvent{Kind: TakenOver, From: before.Worker, FromDelivery: before.Delivery,
			Message: fmt.Sprintf("taken over from %s (delivery %d), which stopped answering", before.Worker, before.Delivery)})
	}
	if d.num > o.MaxDeliveries {
		why := fmt.Sprintf("gave up after %d deliveries (its workers died or it kept failing; last: %s)", o.MaxDeliveries, st.Note)
		d.fail(ctx, &batch.Outcome{Line: st.Line, Source: st.Source, Output: st.Output, Status: batch.Failed, Error: why})
		return false
	}
	st.State, st.Phase, st.DoneBytes, st.VirtualBytes, st.Outcome, st.SourceID = Running, "", 0, 0, nil, nil
	st.Heartbeat = w.tick
	if err := putStatus(ctx, d.store, st); err != nil {
		d.logf("status: %v", err)
	}
	d.tell(WorkerEvent{Kind: Started, Message: fmt.Sprintf("started (delivery %d)", d.num)})
	return true
}

// status is the disk's status as the bucket holds it (a new one if none),
// this delivery's, and what it was before this delivery took it.
func (d *delivery) status(ctx context.Context) (st *Status, before Status) {
	spec := &d.spec
	st, _, err := d.w.q.getStatus(ctx, d.m.Key)
	if st == nil {
		if err != nil {
			d.logf("%v", err)
		}
		st = &Status{Key: d.m.Key, Line: d.m.Line, Source: image.Redact(spec.Source), Output: spec.Output, Digest: batch.Digest(spec), Submitted: d.m.Submitted}
	}
	before = *st
	st.Worker, st.Delivery = d.w.o.Name, d.num
	return st, before
}

// run converts the disk through the batch layer while a heartbeat keeps
// the message and the lease alive; a recorded upload that cannot be
// continued is dropped and the disk begun anew. Once the disk no longer
// converts its slot is released; an import is followed after.
func (d *delivery) run(base context.Context, release func()) {
	w := d.w
	jctx, jcancel := context.WithCancelCause(base)
	defer jcancel(nil)
	stopBeat := d.heartbeat(base, jcancel)
	opts := batch.Options{State: d.store, UploadState: d.store, UploadStateWhere: w.q.Where(), KeepUploads: true, NoLinks: !w.o.ShareLinks,
		Events: func(e batch.Event) { d.event(base, e, jcancel) }, Fence: d.l.check, Clients: w.clients}
	it := batch.Item{Line: d.m.Line, Spec: d.spec}
	disk := batch.NewDisk(it, w.budget, opts)
	oc, following := disk.Convert(jctx)
	if oc.Status == batch.Failed && errors.Is(oc.Err, upload.ErrCannotResume) && jctx.Err() == nil {
		// The recorded upload cannot be continued (the source changed,
		// say): drop it and start over.
		d.logf("%v: aborting it and starting over", oc.Err)
		d.abortKept(base)
		disk = batch.NewDisk(it, w.budget, opts)
		oc, following = disk.Convert(jctx)
	}
	release()
	if following {
		oc = disk.Follow(jctx)
	}
	stopBeat()
	d.oc, d.cause = oc, context.Cause(jctx)
}

// event takes a job's event: progress into the status, notices and
// warnings into the log; before the output is made to look done, the
// lease must still be this worker's.
func (d *delivery) event(ctx context.Context, e batch.Event, cancel context.CancelCauseFunc) {
	if e.Kind != batch.DiskEvent {
		d.tell(WorkerEvent{Kind: DiskEvent, Batch: &e})
		return
	}
	je := e.Job
	d.prog.mu.Lock()
	switch je.Kind {
	case job.Started:
		d.prog.size = je.Info.VirtualSize
	case job.PhaseChanged:
		d.prog.phase = string(je.Phase)
	case job.Progress:
		d.prog.done, d.prog.size = je.Stats.Done, je.Stats.Size
	}
	d.prog.mu.Unlock()
	te := WorkerEvent{Kind: DiskEvent, Batch: &e}
	switch je.Kind {
	case job.Warning:
		te.Message = "warning: " + je.Message
	case job.Notice:
		te.Message = je.Message
	}
	d.tell(te)
	switch je.Kind {
	case job.PhaseChanged:
		if je.Phase == job.Finishing {
			if err := d.l.renew(ctx); errors.Is(err, ErrLeaseLost) {
				cancel(err)
			}
		}
	}
}

// end settles the message and the status by how the delivery ended.
func (d *delivery) end(ctx context.Context) {
	w, o, st, oc := d.w, &d.w.o, d.st, &d.oc
	if d.cause == nil {
		// The job may have ended before the heartbeat saw the lease go
		// (a worker woken after a pause): ask.
		if err := d.l.check(ctx); errors.Is(err, kv.ErrFenced) {
			d.cause = err
		}
	}
	switch {
	case errors.Is(d.cause, ErrLeaseLost) || errors.Is(d.cause, errFenced) || errors.Is(d.cause, kv.ErrFenced):
		// Nothing shared is touched: not the status, not the message.
		d.ended(EndLost, nil, "stopped: %v; the disk is another worker's now", d.cause)
	case errors.Is(d.cause, errDrain) && (oc.Status == batch.Cancelled || oc.Status == batch.Failed):
		st.State, st.Note, st.Outcome = Queued, "handed back by "+o.Name+" (stopping)", nil
		d.putFinal(ctx)
		d.l.release(ctx)
		d.msg.Nak()
		d.ended(EndHandedBack, nil, "handed back to the queue (the worker is stopping)")
	case oc.Status == batch.Done || oc.Status == batch.Skipped:
		st.State, st.Note, st.Outcome = Done, "", oc
		st.SourceID = oc.SourceID // as the run opened it
		d.putFinal(ctx)
		d.l.release(ctx)
		if err := w.settle(ctx, func(ctx context.Context) error { return d.msg.DoubleAck(ctx) }); err != nil {
			d.logf("acknowledging: %v (a redelivery will find it done)", err)
		}
		end := EndDone
		if oc.Status == batch.Skipped {
			end = EndSkipped
		}
		d.ended(end, oc, "%s in %.1fs", oc.Status, oc.Seconds)
	case Permanent(oc.Err):
		d.fail(ctx, oc)
	case d.num >= o.MaxDeliveries:
		oc.Error = fmt.Sprintf("gave up after %d deliveries: %s", d.num, oc.Error)
		d.fail(ctx, oc)
	default:
		delay := min(o.RetryDelay<<min(d.num-1, 16), maxRetryDelay)
		st.State, st.Outcome = Queued, nil
		st.Note = fmt.Sprintf("delivery %d of %d failed: %s; retry in %s", d.num, o.MaxDeliveries, firstLine(oc.Error), delay)
		d.putFinal(ctx)
		d.l.release(ctx)
		d.msg.NakWithDelay(delay)
		d.tell(WorkerEvent{Kind: Ended, End: EndRetry, Outcome: oc, RetryIn: delay, Message: st.Note})
	}
}

// settle runs fn until it succeeds, riding out a server that restarts,
// for as long as the server would wait for the disk (AckWait) and at
// least 30s. A write refused because the lease is lost is not tried
// again.
func (w *worker) settle(ctx context.Context, fn func(context.Context) error) error {
	deadline := time.Now().Add(max(w.o.AckWait, 30*time.Second))
	pause := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil || errors.Is(err, kv.ErrFenced) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// putFinal writes the status a delivery ends with: it must get there
// (while the lease is this worker's).
func (d *delivery) putFinal(ctx context.Context) {
	st := d.st
	if !d.w.o.ShareLinks && st.Outcome != nil {
		c := *st
		c.Outcome = st.Outcome.WithoutLinks()
		st = &c
	}
	if err := d.w.settle(ctx, func(ctx context.Context) error { return putStatus(ctx, d.store, st) }); err != nil {
		d.logf("status: %v", err)
	}
}

// heartbeat tells the server the disk is still at work, renews the lease
// and writes the progress into the status, every tick, until stopped. A
// lost lease, or one it could not renew for long, cancels the job.
func (d *delivery) heartbeat(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d.w.tick)
		defer t.Stop()
		logged, loggedDone := time.Now(), int64(0)
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			d.msg.InProgress()
			if err := d.l.renew(ctx); err != nil {
				if errors.Is(err, ErrLeaseLost) {
					cancel(err)
					return
				}
				if d.l.fenced() {
					cancel(fmt.Errorf("%w (%v)", errFenced, err))
					return
				}
				continue
			}
			d.prog.mu.Lock()
			s := *d.st
			s.Phase, s.DoneBytes, s.VirtualBytes = d.prog.phase, d.prog.done, d.prog.size
			d.prog.mu.Unlock()
			putStatus(ctx, d.store, &s)
			if every := d.w.o.ProgressEvery; every > 0 && time.Since(logged) >= every {
				d.logf("%s", progressLine(s.Phase, s.DoneBytes, s.VirtualBytes, s.DoneBytes-loggedDone, time.Since(logged)))
				logged, loggedDone = time.Now(), s.DoneBytes
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// progressLine tells where a running disk stands: its phase, the bytes of
// the pass done, and the rate since the line before.
func progressLine(phase string, done, size, moved int64, since time.Duration) string {
	if phase == "" {
		phase = "starting"
	}
	if size <= 0 || done <= 0 {
		return "progress: " + phase
	}
	s := fmt.Sprintf("progress: %s, %s / %s (%d%%)", phase, units.Bytes(done), units.Bytes(size), done*100/size)
	if r := units.Rate(moved, since.Seconds()); r != "" && moved > 0 {
		s += ", " + r
	}
	return s
}

// fail records a disk that failed for good, drops what its upload kept,
// and removes its message.
func (d *delivery) fail(ctx context.Context, oc *batch.Outcome) {
	d.abortKept(ctx)
	d.st.State, d.st.Note, d.st.Outcome = Failed, "", oc
	d.putFinal(ctx)
	d.l.release(ctx)
	d.msg.TermWithReason("failed: " + firstLine(oc.Error))
	d.ended(EndFailed, oc, "failed: %s", oc.Error)
}

// abortKept aborts the upload the bucket records for the disk's output, if
// any: kept by a failed or dead delivery, and not to be continued. Its
// record is written under the lease before anything is aborted: a worker
// that lost the lease aborts nothing.
func (d *delivery) abortKept(ctx context.Context) {
	spec := &d.spec
	if spec.Kind() != job.ToBucket {
		return
	}
	b, k, err := spec.Destination()
	if err != nil {
		return
	}
	c, err := spec.Upload.Store.Client(ctx, 2)
	if err != nil {
		d.logf("could not drop the kept upload: %v", err)
		return
	}
	defer c.Close()
	id, err := upload.AbortRecorded(ctx, c, upload.KVState{Store: d.store, Key: upload.StateKey(c, b, k), Where: d.w.q.Where()})
	switch {
	case err != nil:
		d.logf("could not drop the kept upload: %v", err)
	case id != "":
		d.logf("aborted upload %s of s3://%s/%s", id, b, k)
	}
}

// Permanent tells whether a disk's error is worth no retry: a bad setting,
// a broken, unreadable or unsupported image, a broken import rule, or the
// cloud refusing the import. Anything else (network, server, a full disk)
// may pass.
func Permanent(err error) bool {
	var se *job.SpecError
	var ie *job.InputError
	var imp *job.ImportError
	return errors.As(err, &se) || errors.As(err, &ie) || errors.As(err, &imp) ||
		errors.Is(err, image.ErrCorrupt) || errors.Is(err, image.ErrUnsupported) || errors.Is(err, image.ErrNotAllowed) ||
		errors.Is(err, check.ErrRule)
}
