// Package observe watches disks being converted, for the people who run a
// fleet: Prometheus metrics and machine-readable logs (log/slog records),
// and the HTTP endpoints a cluster scrapes and probes (/metrics, /healthz,
// /readyz). It only observes: it hears the events the job, batch and
// queue layers tell (job.Event, batch.Event, queue.WorkerEvent) and the
// state they expose (the memory budget, the queue's backlog), and decides
// nothing.
//
// Every process has its own registry (NewMetrics takes it): no metric
// lives in the client library's global default registry.
package observe

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"vmimport/batch"
	"vmimport/internal/objstore"
	"vmimport/job"
	"vmimport/queue"
	"vmimport/upload"
)

// Metrics are the collectors of a process, registered on its registry.
// Their names and labels are the contract of the dashboard and alerts in
// deploy/ (README.md: Operating a fleet); every label has a bounded set of
// values (never a path, a key or an error message).
type Metrics struct {
	disks        *prometheus.CounterVec
	running      prometheus.Gauge
	inPhase      *prometheus.GaugeVec
	deliveries   *prometheus.CounterVec
	redelivered  prometheus.Counter
	takenOver    prometheus.Counter
	read         prometheus.Counter
	zero         *prometheus.CounterVec
	written      *prometheus.CounterVec
	uploaded     *prometheus.CounterVec
	diskSeconds  *prometheus.HistogramVec
	phaseSeconds *prometheus.HistogramVec
	partSeconds  prometheus.Histogram
	partRetries  *prometheus.CounterVec
	storeRetries *prometheus.CounterVec
	imports      *prometheus.CounterVec
	importSecs   prometheus.Histogram
	findings     *prometheus.CounterVec

	reg prometheus.Registerer
}

// Label values.
var (
	// DiskResults are the values of convert_disks_total's result.
	DiskResults = []string{string(batch.Done), string(batch.Failed), string(batch.Skipped), string(batch.Cancelled)}
	// Ends are the values of convert_deliveries_total's result.
	Ends = []queue.End{queue.EndDone, queue.EndSkipped, queue.EndFailed, queue.EndRefused, queue.EndRetry,
		queue.EndHandedBack, queue.EndBusy, queue.EndLost, queue.EndUnreadable}
	// OutputKinds are the values of convert_written_bytes_total's output.
	OutputKinds = []string{"file", "upload", "stdout"}
	// PartHows are the values of convert_upload_bytes_total's how.
	PartHows = []string{upload.PartSent, upload.PartCopied, upload.PartReused}
	// RetryReasons are the values of the retries' reason: the store's
	// codes worth a retry, the HTTP statuses worth one, and a call that
	// got no answer (connection, timeout).
	RetryReasons = []string{"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
		"ThrottlingException", "RequestLimitExceeded", "http_500", "http_502", "http_503", "http_504",
		"http_408", "http_429", "connection", "timeout", "other"}
	// ImportResults are the values of convert_import_tasks_total's result.
	ImportResults = []string{"finished", "failed", "refused", "submitted", "timeout", "cancelled"}
)

// Buckets of the histograms, in seconds: a disk takes from seconds to many
// hours (500 GiB over a slow link), a part from milliseconds to minutes, an
// import task from minutes to hours.
var (
	diskBuckets   = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400}
	phaseBuckets  = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 43200}
	partBuckets   = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	importBuckets = []float64{5, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400}
)

// NewMetrics makes the metrics and registers them on reg, with the Go
// runtime's and the process's own collectors and convert_build_info
// (version: the binary's).
func NewMetrics(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{reg: reg}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	m.disks = counter("convert_disks_total", "Disks that ended, by result: done, failed (for good), skipped (done before), cancelled.", "result")
	m.running = prometheus.NewGauge(prometheus.GaugeOpts{Name: "convert_disks_running", Help: "Disks being converted now (or waiting for their import)."})
	m.inPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "convert_disks_in_phase", Help: "Disks in each phase of their job now (converting, uploading_parts, waiting_import, ...)."}, []string{"phase"})
	m.deliveries = counter("convert_deliveries_total", "Deliveries of queue messages a worker ended, by how: done, skipped, failed, refused, retry, handed_back, busy, lost, unreadable.", "result")
	m.redelivered = prometheus.NewCounter(prometheus.CounterOpts{Name: "convert_redelivered_messages_total", Help: "Queue messages this worker got that were delivered before (a worker died, a retry, a hand-back)."})
	m.takenOver = prometheus.NewCounter(prometheus.CounterOpts{Name: "convert_disks_taken_over_total", Help: "Disks this worker took over from a delivery that never ended (its worker died or stopped answering)."})
	m.read = prometheus.NewCounter(prometheus.CounterOpts{Name: "convert_read_bytes_total", Help: "Bytes read from sources."})
	m.zero = counter("convert_zero_bytes_skipped_total", "Zero bytes of the disks never sent on, by how they were found: allocation_map (never read) or detected (read, found zero).", "how")
	m.written = counter("convert_written_bytes_total", "Bytes of output written, by output kind: file, upload, stdout.", "output")
	m.uploaded = counter("convert_upload_bytes_total", "Bytes of upload parts stored, by how: sent, copied (server-side, from the zero object), reused (found from an earlier run); a part tried again counts once.", "how")
	m.diskSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "convert_disk_duration_seconds", Help: "Time a disk took to convert (opening to its end, before any import wait), by result: done or failed.", Buckets: diskBuckets}, []string{"result"})
	m.phaseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "convert_phase_duration_seconds", Help: "Time disks spent in each phase of their job.", Buckets: phaseBuckets}, []string{"phase"})
	m.partSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "convert_upload_part_duration_seconds", Help: "Time an upload part took to be stored (sent or copied), retries included.", Buckets: partBuckets})
	m.partRetries = counter("convert_upload_part_retries_total", "Upload parts (UploadPart, UploadPartCopy) tried again, by reason: the store's code, http_STATUS, connection or timeout.", "reason")
	m.storeRetries = counter("convert_store_retries_total", "Calls to object stores tried again (every call, parts included), by call.", "op")
	m.imports = counter("convert_import_tasks_total", "Import tasks, by result: finished, failed, refused (ImportImage said no), submitted (not followed), timeout, cancelled.", "result")
	m.importSecs = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "convert_import_duration_seconds", Help: "Time import tasks took, from the request to their end (finished or failed).", Buckets: importBuckets})
	m.findings = counter("convert_check_findings_total", "Findings of the import check, by rule and severity (info, warning, error).", "rule", "severity")
	reg.MustRegister(m.running, m.inPhase, m.redelivered, m.takenOver, m.read, m.diskSeconds, m.phaseSeconds, m.partSeconds, m.importSecs)
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "convert_build_info", Help: "The binary's version (always 1).", ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Known label values start at zero, so that a rate() sees the first
	// one and a dashboard every series.
	for _, v := range DiskResults {
		m.disks.WithLabelValues(v)
	}
	for _, v := range OutputKinds {
		m.written.WithLabelValues(v)
	}
	for _, v := range PartHows {
		m.uploaded.WithLabelValues(v)
	}
	for _, v := range RetryReasons {
		m.partRetries.WithLabelValues(v)
	}
	for _, v := range ImportResults {
		m.imports.WithLabelValues(v)
	}
	for _, v := range phaseLabels {
		m.inPhase.WithLabelValues(v)
	}
	for _, v := range []string{"allocation_map", "detected"} {
		m.zero.WithLabelValues(v)
	}
	return m
}

// WatchBudget reports the memory budget b: its size and the part the
// running disks hold.
func (m *Metrics) WatchBudget(b *job.Budget) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "convert_memory_budget_bytes", Help: "The memory budget of the running disks together (--memory)."},
			func() float64 { return float64(b.Total()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "convert_memory_budget_used_bytes", Help: "The part of the memory budget the running disks hold now."},
			func() float64 { return float64(b.Used()) }),
	)
}

// WatchDeliveries starts the counters only a worker has at zero.
func (m *Metrics) WatchDeliveries() {
	for _, v := range Ends {
		m.deliveries.WithLabelValues(string(v))
	}
}

// Backlogger is what WatchQueue asks at every scrape (a *queue.Queue).
type Backlogger interface {
	Backlog(context.Context) (queue.Backlog, error)
}

// WatchQueue reports the queue's backlog, asked of the server at every
// scrape (at most 3 s); a scrape while the server is out of reach has
// convert_queue_up 0 and no backlog.
func (m *Metrics) WatchQueue(q Backlogger) {
	m.reg.MustRegister(&backlogCollector{q: q})
}

var (
	queueUp          = prometheus.NewDesc("convert_queue_up", "1 if the queue's server answered this scrape's question about the backlog, else 0.", nil, nil)
	queuePending     = prometheus.NewDesc("convert_queue_pending_messages", "Disks in the queue no worker has taken yet (the workers' consumer's pending messages).", nil, nil)
	queueAckPending  = prometheus.NewDesc("convert_queue_ack_pending_messages", "Disks taken by a worker and not yet settled (running, or held by a dead worker until --ack-wait).", nil, nil)
	queueRedelivered = prometheus.NewDesc("convert_queue_redelivered_messages", "Of the disks not yet settled, those delivered more than once.", nil, nil)
)

type backlogCollector struct{ q Backlogger }

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueUp
	ch <- queuePending
	ch <- queueAckPending
	ch <- queueRedelivered
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b, err := c.q.Backlog(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(queuePending, prometheus.GaugeValue, float64(b.Pending))
	ch <- prometheus.MustNewConstMetric(queueAckPending, prometheus.GaugeValue, float64(b.AckPending))
	ch <- prometheus.MustNewConstMetric(queueRedelivered, prometheus.GaugeValue, float64(b.Redelivered))
}

// phaseLabels names each phase of a job in convert_phase_duration_seconds.
var phaseLabels = map[job.Phase]string{
	job.Opening: "opening", job.Waiting: "waiting_memory", job.Preflight: "preflight", job.Checking: "checking",
	job.Reading: "converting", job.Verifying: "verifying_digests", job.Finishing: "finishing",
	job.UploadingParts: "uploading_parts", job.Completing: "completing", job.CheckingObject: "checking_object",
	job.VerifyingObject: "verifying_object", job.Aborting: "cleaning_up", job.Importing: "importing",
	job.WaitingImport: "waiting_import",
}

// phaseLabel is p's label; "other" for a phase it does not know.
func phaseLabel(p job.Phase) string {
	if l, ok := phaseLabels[p]; ok {
		return l
	}
	return "other"
}

// retryReason is the reason label of a failed call tried again.
func retryReason(err error) string {
	code, status := objstore.Code(err), objstore.Status(err)
	for _, r := range RetryReasons[:7] {
		if code == r {
			return r
		}
	}
	if status == 0 {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return "timeout"
		}
		return "connection"
	}
	r := "http_" + strconv.Itoa(status)
	for _, k := range RetryReasons {
		if k == r {
			return r
		}
	}
	return "other"
}

// storeOps are the calls the retrying store names (objstore.Retrying).
var storeOp = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{1,40}$`)

// opLabel is the op label of a call: its name, as the store calls it.
func opLabel(op string) string {
	if storeOp.MatchString(op) {
		return op
	}
	return "other"
}

// ruleLabel is the rule label of a finding: its id (check's constants:
// "fs.root", "windows.rdp").
var ruleID = regexp.MustCompile(`^[a-z]+\.[a-z0-9-]{1,40}$`)

func ruleLabel(r string) string {
	if ruleID.MatchString(r) {
		return r
	}
	return "other"
}

// importResult is the result label of an import.
func importResult(imp *job.ImportResult, status batch.Status) string {
	switch s := strings.ToLower(imp.Status); {
	case status == batch.Cancelled:
		return "cancelled"
	case s == "finished" || s == "failed" || s == "refused" || s == "submitted":
		return s
	case s == "pending" || s == "running":
		return "timeout"
	}
	return "failed"
}

// outputKind is the output label of a spec's output.
func outputKind(s *job.Spec) string {
	switch s.Kind() {
	case job.ToBucket:
		return "upload"
	case job.ToStdout:
		return "stdout"
	}
	return "file"
}
