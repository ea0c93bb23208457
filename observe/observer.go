package observe

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"vmimport/batch"
	"vmimport/internal/objstore"
	"vmimport/job"
	"vmimport/queue"
	"vmimport/reader/image"
	"vmimport/stream"
)

// Observer hears the events of disks (of a local batch, of a queue
// worker's deliveries, of a submission followed) and turns them into
// metrics and log records. Either may be off (nil). Safe for concurrent
// use.
type Observer struct {
	m    *Metrics
	log  *slog.Logger
	name string // the worker, or the batch's host, in records

	mu    sync.Mutex
	disks map[string]*disk
}

// New returns an observer that counts into m and logs to log (either may
// be nil); name names this process in the records (the worker's name).
func New(m *Metrics, log *slog.Logger, name string) *Observer {
	return &Observer{m: m, log: log, name: name, disks: map[string]*disk{}}
}

// ref is a disk as records name it.
type ref struct {
	key, source, output string
	line, delivery      int
	worker              string
}

// disk is what the observer keeps of a disk while it runs.
type disk struct {
	ref     ref
	kind    string // output kind
	started time.Time
	phase   job.Phase
	since   time.Time // of the phase
	stats   stream.Stats
	written int64
	// lastRetry is when a retry was last logged; retries counts them.
	lastRetry time.Time
	retries   int
	task      string // the import task's state last logged
}

// mode says who tells a batch event, and so what it counts.
type mode int

const (
	local    mode = iota // a local batch: its disks end with DiskDone
	worker               // a queue worker: its deliveries end with Ended
	follower             // a submission followed: the workers count; log only
)

// Batch hears an event of a local batch (batch.Options.Events).
func (o *Observer) Batch(e batch.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batchEvent(strconv.Itoa(e.Index), func() ref { return itemRef(e.Item, o.name) }, &e.Item.Spec, e, local)
}

// Followed hears an event of a submission followed with --wait (a
// queue.Follow's events): records only, the workers count.
func (o *Observer) Followed(e batch.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batchEvent("f"+strconv.Itoa(e.Index), func() ref { return itemRef(e.Item, "") }, &e.Item.Spec, e, follower)
}

// itemRef names a disk of a batch.
func itemRef(it *batch.Item, worker string) ref {
	return ref{key: batch.Key(&it.Spec), line: it.Line, source: image.Redact(it.Spec.Source), output: it.Spec.Output, worker: worker}
}

// Submitted logs the disks a submission queued (or found queued, running
// or done).
func (o *Observer) Submitted(subs []queue.Submitted) {
	for _, s := range subs {
		r := ref{key: s.Key, line: s.Line, source: s.Source, output: s.Output}
		attrs := []slog.Attr{slog.String("result", s.Result)}
		if s.Note != "" {
			attrs = append(attrs, slog.String("note", s.Note))
		}
		o.record(slog.LevelInfo, "queued", &r, attrs...)
	}
}

// Worker hears an event of a queue worker (queue.WorkerOptions.Events).
func (o *Observer) Worker(e queue.WorkerEvent) {
	r := ref{key: e.Key, line: e.Line, source: e.Source, output: e.Output, delivery: e.Delivery, worker: e.Worker}
	id := e.Key + "#" + strconv.Itoa(e.Delivery)
	o.mu.Lock()
	defer o.mu.Unlock()
	switch e.Kind {
	case queue.WorkerNote:
		if o.log != nil {
			o.log.LogAttrs(context.Background(), slog.LevelInfo, "worker", slog.String("worker", e.Worker), slog.String("message", e.Message))
		}
	case queue.Received:
		attrs := []slog.Attr{}
		if e.Delivery > 1 {
			if o.m != nil {
				o.m.redelivered.Inc()
			}
			attrs = append(attrs, slog.Bool("redelivered", true))
		}
		o.record(slog.LevelInfo, "received", &r, attrs...)
	case queue.TakenOver:
		if o.m != nil {
			o.m.takenOver.Inc()
		}
		o.record(slog.LevelWarn, "taken over", &r, slog.String("from_worker", e.From), slog.Int("from_delivery", e.FromDelivery))
	case queue.Started:
		o.record(slog.LevelInfo, "started", &r)
	case queue.DiskEvent:
		if e.Batch != nil {
			var spec *job.Spec
			if e.Batch.Item != nil {
				spec = &e.Batch.Item.Spec
			}
			o.batchEvent(id, func() ref { return r }, spec, *e.Batch, worker)
		}
	case queue.Note:
		o.record(slog.LevelInfo, "note", &r, slog.String("message", e.Message))
	case queue.Ended:
		o.delivered(id, &r, e)
	}
}

// delivered counts and logs the end of a delivery.
func (o *Observer) delivered(id string, r *ref, e queue.WorkerEvent) {
	if o.m != nil {
		o.m.deliveries.WithLabelValues(string(e.End)).Inc()
		switch e.End {
		case queue.EndDone:
			o.m.disks.WithLabelValues(string(batch.Done)).Inc()
		case queue.EndSkipped:
			o.m.disks.WithLabelValues(string(batch.Skipped)).Inc()
		case queue.EndFailed, queue.EndRefused:
			o.m.disks.WithLabelValues(string(batch.Failed)).Inc()
		}
	}
	delete(o.disks, id)
	level := slog.LevelInfo
	msg := string(e.End)
	attrs := []slog.Attr{}
	switch e.End {
	case queue.EndFailed, queue.EndRefused:
		level = slog.LevelError
	case queue.EndRetry:
		level, msg = slog.LevelWarn, "requeued"
		attrs = append(attrs, slog.Float64("retry_in_seconds", e.RetryIn.Seconds()))
	case queue.EndHandedBack:
		msg = "handed back"
	case queue.EndBusy:
		msg = "busy"
		attrs = append(attrs, slog.String("message", e.Message))
	case queue.EndLost:
		level, msg = slog.LevelWarn, "lease lost"
		attrs = append(attrs, slog.String("message", e.Message))
	case queue.EndUnreadable:
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("message", e.Message))
	}
	attrs = append(attrs, outcomeAttrs(e.Outcome)...)
	o.record(level, msg, r, attrs...)
}

// outcomeAttrs are what a record says of a disk's outcome.
func outcomeAttrs(oc *batch.Outcome) []slog.Attr {
	if oc == nil {
		return nil
	}
	a := []slog.Attr{slog.String("status", string(oc.Status)), slog.Float64("seconds", oc.Seconds), slog.Int64("bytes", oc.Bytes)}
	if oc.Error != "" {
		a = append(a, slog.String("error", oc.Error))
	}
	if oc.SkippedBecause != "" {
		a = append(a, slog.String("skipped_because", oc.SkippedBecause))
	}
	if oc.Target != nil {
		a = append(a, slog.Int("parts", int(oc.Target.Parts)), slog.Int("parts_reused", int(oc.Target.PartsReused)))
	}
	if imp := oc.Import; imp != nil && imp.TaskID != "" {
		a = append(a, slog.String("import_task", string(imp.TaskID)), slog.String("import_status", imp.Status))
		if imp.ImageID != "" {
			a = append(a, slog.String("image_id", imp.ImageID))
		}
	}
	return a
}

// batchEvent handles an event of a disk's batch run, told by m.
func (o *Observer) batchEvent(id string, r func() ref, spec *job.Spec, e batch.Event, m mode) {
	d := o.disks[id]
	if d == nil {
		d = &disk{ref: r()}
		if spec != nil {
			d.kind = outputKind(spec)
		}
		o.disks[id] = d
	}
	now := time.Now()
	switch e.Kind {
	case batch.DiskStarted:
		if d.started.IsZero() {
			d.started = now
			if m != follower && o.m != nil {
				o.m.running.Inc()
			}
		}
		if m == local || m == follower {
			o.record(slog.LevelInfo, "started", &d.ref)
		}
	case batch.DiskEvent:
		o.jobEvent(d, e.Job, m, now)
	case batch.DiskDone:
		o.diskDone(d, e.Outcome, m, now)
		delete(o.disks, id)
	}
}

// jobEvent handles an event of a disk's job.
func (o *Observer) jobEvent(d *disk, e job.Event, m mode, now time.Time) {
	counting := m != follower && o.m != nil
	switch e.Kind {
	case job.Started:
		// A job begins (again, for a disk begun anew): its counts start
		// from zero.
		d.stats, d.written = stream.Stats{}, 0
		if e.Info != nil && m != follower {
			o.record(slog.LevelInfo, "opened", &d.ref, slog.String("format", e.Info.Format), slog.Int64("virtual_bytes", e.Info.VirtualSize))
		}
	case job.PhaseChanged:
		o.endPhase(d, now, counting)
		d.phase, d.since = e.Phase, now
		if counting {
			o.m.inPhase.WithLabelValues(phaseLabel(e.Phase)).Inc()
		}
		o.record(slog.LevelInfo, "phase", &d.ref, slog.String("phase", phaseLabel(e.Phase)))
	case job.Progress:
		if counting {
			st := e.Stats
			if n := st.Read - d.stats.Read; n > 0 {
				o.m.read.Add(float64(n))
			}
			if n := st.Skipped - d.stats.Skipped; n > 0 {
				o.m.zero.WithLabelValues("allocation_map").Add(float64(n))
			}
			if n := st.Detected - d.stats.Detected; n > 0 {
				o.m.zero.WithLabelValues("detected").Add(float64(n))
			}
			if n := e.Written - d.written; n > 0 && d.kind != "" {
				o.m.written.WithLabelValues(d.kind).Add(float64(n))
				d.written = e.Written
			}
		}
		d.stats = e.Stats
	case job.Checked:
		if e.Check == nil {
			break
		}
		rules := []string{}
		for _, f := range e.Check.Findings {
			if counting {
				o.m.findings.WithLabelValues(ruleLabel(f.Rule), f.Severity.String()).Inc()
			}
			rules = append(rules, f.Severity.String()+":"+f.Rule)
		}
		o.record(slog.LevelInfo, "checked", &d.ref, slog.String("verdict", e.Check.Status), slog.String("findings", strings.Join(rules, " ")))
	case job.Warning:
		o.record(slog.LevelWarn, "warning", &d.ref, slog.String("message", e.Message))
	case job.Notice:
		o.record(slog.LevelInfo, "notice", &d.ref, slog.String("message", e.Message))
	case job.ImportProgress:
		if e.Task != nil && e.Task.TaskStatus != d.task {
			d.task = e.Task.TaskStatus
			o.record(slog.LevelInfo, "import", &d.ref, slog.String("task", string(e.Task.TaskID)), slog.String("state", e.Task.TaskStatus))
		}
	case job.PartStored:
		if counting && e.Part != nil {
			o.m.uploaded.WithLabelValues(e.Part.How).Add(float64(e.Part.Bytes))
			if e.Part.How != "reused" {
				o.m.partSeconds.Observe(e.Part.Took.Seconds())
			}
		}
	case job.Retried:
		if e.Retry != nil {
			o.retried(d, e.Retry, counting, now)
		}
	}
}

// retried counts a store call tried again and logs it, at most once a
// second per disk (the count says how many there were).
func (o *Observer) retried(d *disk, r *objstore.Retry, counting bool, now time.Time) {
	reason := retryReason(r.Err)
	if counting {
		if r.Op == "UploadPart" || r.Op == "UploadPartCopy" {
			o.m.partRetries.WithLabelValues(reason).Inc()
		}
		o.m.storeRetries.WithLabelValues(opLabel(r.Op)).Inc()
	}
	d.retries++
	if now.Sub(d.lastRetry) < time.Second {
		return
	}
	d.lastRetry = now
	attrs := []slog.Attr{slog.String("op", r.Op), slog.String("reason", reason), slog.Int("attempt", r.Attempt), slog.Int("attempts", r.Attempts),
		slog.Float64("delay_seconds", r.Delay.Seconds()), slog.Int("retries", d.retries), slog.String("error", firstLine(r.Err.Error()))}
	if r.Part > 0 {
		attrs = append(attrs, slog.Int("part", int(r.Part)))
	}
	o.record(slog.LevelWarn, "retry", &d.ref, attrs...)
}

// endPhase observes how long the disk was in its phase.
func (o *Observer) endPhase(d *disk, now time.Time, counting bool) {
	if d.phase != "" && counting {
		o.m.phaseSeconds.WithLabelValues(phaseLabel(d.phase)).Observe(now.Sub(d.since).Seconds())
		o.m.inPhase.WithLabelValues(phaseLabel(d.phase)).Dec()
	}
	d.phase = ""
}

// diskDone handles the end of a disk's run.
func (o *Observer) diskDone(d *disk, oc *batch.Outcome, m mode, now time.Time) {
	counting := m != follower && o.m != nil
	o.endPhase(d, now, counting)
	if counting && oc != nil {
		if !d.started.IsZero() {
			o.m.running.Dec()
			if oc.Status == batch.Done || oc.Status == batch.Failed {
				o.m.diskSeconds.WithLabelValues(string(oc.Status)).Observe(oc.Seconds)
			}
			if oc.Status == batch.Done && d.kind != "" && oc.Bytes > d.written {
				// The encoder's last words (QCOW2's tables) come after
				// the pass's last progress.
				o.m.written.WithLabelValues(d.kind).Add(float64(oc.Bytes - d.written))
			}
			if imp := oc.Import; imp != nil && (imp.TaskID != "" || imp.Status == "refused") {
				o.m.imports.WithLabelValues(importResult(imp, oc.Status)).Inc()
				if imp.WaitSeconds > 0 && (imp.Status == "finished" || imp.Status == "failed") {
					o.m.importSecs.Observe(imp.WaitSeconds)
				}
			}
		}
		if m == local {
			o.m.disks.WithLabelValues(string(oc.Status)).Inc()
		}
	}
	if m == worker || oc == nil {
		return // the delivery's end says it
	}
	level := slog.LevelInfo
	if oc.Status == batch.Failed || oc.Status == batch.Cancelled {
		level = slog.LevelError
	}
	o.record(level, string(oc.Status), &d.ref, outcomeAttrs(oc)...)
}

// record logs msg about disk r.
func (o *Observer) record(level slog.Level, msg string, r *ref, attrs ...slog.Attr) {
	if o.log == nil {
		return
	}
	a := make([]slog.Attr, 0, 6+len(attrs))
	a = append(a, slog.String("disk", r.key))
	if r.line > 0 {
		a = append(a, slog.Int("line", r.line))
	}
	a = append(a, slog.String("source", r.source), slog.String("output", r.output))
	if r.worker != "" {
		a = append(a, slog.String("worker", r.worker))
	}
	if r.delivery > 0 {
		a = append(a, slog.Int("delivery", r.delivery))
	}
	o.log.LogAttrs(context.Background(), level, msg, append(a, attrs...)...)
}

// Log logs a line about the process (not about a disk).
func (o *Observer) Log(level slog.Level, msg string, attrs ...slog.Attr) {
	if o.log != nil {
		o.log.LogAttrs(context.Background(), level, msg, attrs...)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
