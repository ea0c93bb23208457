package queuetest

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"vmimport/internal/jdcloudtest"
	"vmimport/internal/promtest"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite deploy/testdata/worker-scrape.prom from this run's scrapes")

// scrapeFile is the recorded scrape the deployment test checks the
// dashboard's queries against: the convert_ families of a real run's
// workers, rewritten with -update.
var scrapeFile = filepath.Join("..", "..", "..", "deploy", "testdata", "worker-scrape.prom")

// observed is a worker started with --metrics-addr and --log-format json.
type observed struct {
	name, url string
}

// observedWorker starts worker name with metrics on a free port and JSON
// records, and waits for the record that tells the port.
func (e *env) observedWorker(name string, args ...string) *observed {
	e.t.Helper()
	e.worker(name, append([]string{"--metrics-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	w := &observed{name: name}
	e.waitFor(60*time.Second, "worker "+name+" to serve its metrics", func() bool {
		for _, r := range e.records(name) {
			if r["msg"] == "metrics" {
				w.url, _ = r["url"].(string)
				return true
			}
		}
		return false
	})
	return w
}

// records reads the JSON records of worker name; a line that is not one
// fails the test.
func (e *env) records(name string) []map[string]any {
	e.t.Helper()
	e.mu.Lock()
	p := e.workers[name]
	e.mu.Unlock()
	f, err := os.Open(p.log)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			if len(sc.Bytes()) > 0 && sc.Bytes()[len(sc.Bytes())-1] != '}' {
				continue // a record being written
			}
			e.t.Fatalf("worker %s wrote a line that is no JSON record: %q", name, sc.Text())
		}
		out = append(out, r)
	}
	return out
}

// scraper scrapes workers every few milliseconds while a run goes on and
// keeps every scrape.
type scraper struct {
	t       *testing.T
	workers []*observed
	mu      sync.Mutex
	scrapes map[string][]*promtest.Scrape
	stop    chan struct{}
	done    chan struct{}
}

func scrapeWhileRunning(t *testing.T, every time.Duration, ws ...*observed) *scraper {
	s := &scraper{t: t, workers: ws, scrapes: map[string][]*promtest.Scrape{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			for _, w := range ws {
				if sc, err := promtest.Get(context.Background(), w.url); err == nil {
					s.mu.Lock()
					s.scrapes[w.name] = append(s.scrapes[w.name], sc)
					s.mu.Unlock()
				}
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *scraper) end() map[string][]*promtest.Scrape {
	close(s.stop)
	<-s.done
	return s.scrapes
}

// scrapeAll scrapes every worker now.
func scrapeAll(t *testing.T, ws []*observed) map[string]*promtest.Scrape {
	t.Helper()
	out := map[string]*promtest.Scrape{}
	for _, w := range ws {
		sc, err := promtest.Get(context.Background(), w.url)
		if err != nil {
			t.Fatal(err)
		}
		out[w.name] = sc
	}
	return out
}

// total sums name over the scrapes of every worker.
func total(scs map[string]*promtest.Scrape, name string, labels ...string) float64 {
	sum := 0.0
	for _, sc := range scs {
		sum += sc.Value(name, labels...)
	}
	return sum
}

// objectBytes sums the sizes of the objects of the bucket.
func (e *env) objectBytes() int64 {
	e.t.Helper()
	out, err := srv.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket)})
	if err != nil {
		e.t.Fatal(err)
	}
	var n int64
	for _, o := range out.Contents {
		n += aws.ToInt64(o.Size)
	}
	return n
}

// monotonic are the counters whose every scrape must be at least the one
// before.
var monotonic = []string{"convert_disks_total", "convert_read_bytes_total", "convert_written_bytes_total", "convert_upload_bytes_total",
	"convert_zero_bytes_skipped_total", "convert_upload_part_retries_total", "convert_deliveries_total", "convert_import_tasks_total"}

// TestQueueMetrics: twelve disks over three workers that serve metrics
// and write JSON records, scraped over HTTP while the run goes on: the
// counters only grow, are seen part-way, and end at the run's true totals
// (the disks done are the manifest's lines, the bytes uploaded and written
// the objects' sizes, the bytes read what the disks' outcomes say, two
// injected 500s two part retries, two imports two finished tasks); every
// line a worker writes is a JSON record naming its disk, source, output,
// worker and delivery. Its final scrapes, merged, are the recorded scrape
// the deployment test checks the dashboard against (-update rewrites it).
func TestQueueMetrics(t *testing.T) {
	e := newEnv(t)
	api := jdcloudtest.Start(t, jdcloudtest.Options{})
	e.extra = []string{"JDCLOUD_ACCESS_KEY_ID=" + api.AccessKey, "JDCLOUD_SECRET_ACCESS_KEY=" + api.SecretKey, "CONVERT_ALLOW_ENDPOINT=" + api.URL}
	sample, _ := filepath.Abs(filepath.Join("..", "..", "..", "testdata", "sample.qcow2"))
	var lines []string
	for i := range 12 {
		format := []string{"raw", "qcow2"}[i%2]
		out := fmt.Sprintf("s3://%s/d%02d.%s", e.bucket, i, format)
		if i < 2 {
			// Two imports of a real guest, checked (findings) and
			// followed to their end by the worker.
			lines = append(lines, jsonLine("source", sample, "output", out, "output-format", format, "import", true,
				"image-name", fmt.Sprintf("img%d", i), "check", "warn", "region", srv.Region, "jdcloud-api-endpoint", api.URL, "poll-interval", "5ms"))
			continue
		}
		src := randomDisk(t, filepath.Join(e.dir, fmt.Sprintf("d%02d.raw", i)), 12*mib, mib, 3*mib)
		lines = append(lines, jsonLine("source", src, "output", out, "output-format", format))
	}
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), lines)
	// Parts answer slowly, so that scrapes see the run part-way; two of
	// them fail once with a 500.
	e.proxy.Inject(150*time.Millisecond, func(op string, n int) s3test.Fault {
		switch {
		case op == "UploadPart" && (n == 5 || n == 11):
			return s3test.Fail500
		case op == "UploadPart":
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	var ws []*observed
	for _, name := range []string{"w1", "w2", "w3"} {
		ws = append(ws, e.observedWorker(name, "--retry-delay", "200ms"))
	}
	for _, w := range ws {
		for _, path := range []string{"/healthz", "/readyz"} {
			e.waitFor(30*time.Second, w.name+path, func() bool {
				resp, err := http.Get(strings.TrimSuffix(w.url, "/metrics") + path)
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
		}
	}
	sc := scrapeWhileRunning(t, 40*time.Millisecond, ws...)
	r := e.submit(manifest, "--wait", "--json", "--log-format", "json")()
	if r.code != 0 {
		sc.end()
		t.Fatalf("batch --queue --wait: exit %d\n%s", r.code, r.stderr)
	}
	got, sum := parse(t, r.stdout)
	if sum.Done != 12 {
		sc.end()
		t.Fatalf("summary %+v", sum)
	}
	var read, written float64
	for _, o := range got {
		if o.Stats != nil {
			read += float64(o.Stats.Read)
		}
		written += float64(o.Bytes)
	}
	uploaded := float64(e.objectBytes())
	// A worker counts a disk once it settled its message, just after the
	// status --wait saw: the totals come a moment later.
	var final map[string]*promtest.Scrape
	e.waitFor(30*time.Second, "the metrics to reach the run's totals", func() bool {
		final = scrapeAll(t, ws)
		return total(final, "convert_disks_total", "result", "done") == 12 && total(final, "convert_import_tasks_total", "result", "finished") == 2 &&
			total(final, "convert_disks_running") == 0
	})
	scrapes := sc.end()

	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"convert_disks_total", []string{"result", "done"}, 12},
		{"convert_disks_total", []string{"result", "failed"}, 0},
		{"convert_deliveries_total", []string{"result", "done"}, 12},
		{"convert_disks_running", nil, 0},
		{"convert_disks_in_phase", nil, 0},
		{"convert_upload_bytes_total", nil, uploaded},
		{"convert_written_bytes_total", []string{"output", "upload"}, uploaded},
		{"convert_written_bytes_total", nil, written},
		{"convert_read_bytes_total", nil, read},
		{"convert_upload_part_retries_total", []string{"reason", "InternalError"}, 2},
		{"convert_upload_part_retries_total", nil, 2},
		{"convert_import_tasks_total", []string{"result", "finished"}, 2},
		{"convert_import_duration_seconds", nil, 2},
		{"convert_disk_duration_seconds", []string{"result", "done"}, 12},
		{"convert_memory_budget_used_bytes", nil, 0},
		{"convert_memory_budget_bytes", nil, 3 * 256 << 20},
		{"convert_queue_pending_messages", nil, 0},
		{"convert_queue_ack_pending_messages", nil, 0},
		{"convert_queue_up", nil, 3},
	}
	for _, c := range checks {
		if g := total(final, c.name, c.labels...); g != c.want {
			t.Errorf("%s%v: %v over the workers, want %v", c.name, c.labels, g, c.want)
		}
	}
	if uploaded != written {
		t.Errorf("the objects hold %v bytes; the outcomes say %v", uploaded, written)
	}
	if total(final, "convert_check_findings_total") == 0 || total(final, "convert_zero_bytes_skipped_total") == 0 ||
		total(final, "convert_phase_duration_seconds", "phase", "converting") < 12 || total(final, "convert_upload_part_duration_seconds") == 0 {
		t.Errorf("findings, zero bytes, phases or part durations not counted:\n%s", final["w1"].Text)
	}

	// The counters moved: every worker's only grew from scrape to scrape,
	// and some scrape saw the uploads part-way.
	partway := false
	for name, list := range scrapes {
		for i := 1; i < len(list); i++ {
			for _, m := range monotonic {
				if a, b := list[i-1].Value(m), list[i].Value(m); b < a {
					t.Errorf("worker %s: %s went from %v to %v", name, m, a, b)
				}
			}
		}
	}
	for i := 0; ; i++ {
		var sum float64
		n := 0
		for _, list := range scrapes {
			if i < len(list) {
				sum += list[i].Value("convert_upload_bytes_total")
				n++
			}
		}
		if n == 0 {
			break
		}
		if sum > 0 && sum < uploaded {
			partway = true
		}
	}
	t.Logf("scrapes: w1 %d, w2 %d, w3 %d", len(scrapes["w1"]), len(scrapes["w2"]), len(scrapes["w3"]))
	if !partway {
		t.Error("no scrape saw the uploads part-way")
	}

	// The records: every line of every worker one, each naming its disk;
	// twelve ends, done, between them; the submission's records, one
	// queued a disk.
	ends := 0
	for _, w := range ws {
		for _, rec := range e.records(w.name) {
			if rec["disk"] == nil {
				continue // the worker's own lines
			}
			for _, k := range []string{"source", "output", "worker", "delivery"} {
				if rec[k] == nil {
					t.Errorf("worker %s: record without %s: %v", w.name, k, rec)
				}
			}
			if rec["msg"] == "done" {
				ends++
			}
		}
	}
	if ends != 12 {
		t.Errorf("%d done records, want 12", ends)
	}
	queued := 0
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("convert batch --log-format json wrote a line that is no record: %q", line)
			continue
		}
		if rec["msg"] == "queued" && rec["result"] == "queued" {
			queued++
		}
	}
	if queued != 12 {
		t.Errorf("%d queued records, want 12\n%s", queued, r.stderr)
	}
	e.noLeftovers(12)
	recordScrape(t, final)
}

// recordScrape compares the convert_ families of the workers' scrapes,
// merged, with the recorded scrape in deploy/testdata (the dashboard's
// queries are checked against it): -update rewrites it; a family added,
// dropped or retyped fails until then.
func recordScrape(t *testing.T, scs map[string]*promtest.Scrape) {
	t.Helper()
	merged := map[string]*dto.MetricFamily{}
	names := []string{}
	for _, w := range []string{"w1", "w2", "w3"} {
		for n, f := range scs[w].Families {
			if !strings.HasPrefix(n, "convert_") || merged[n] != nil {
				continue
			}
			merged[n] = f
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# The convert_ metric families of the workers of a real queue run (TestQueueMetrics in\n")
	b.WriteString("# cmd/convert/queuetest, merged: each family from the first worker that had it). Rewritten by\n")
	b.WriteString("# go test ./cmd/convert/queuetest -run TestQueueMetrics -update; deploy's test checks the dashboard against it.\n")
	for _, n := range names {
		if _, err := expfmt.MetricFamilyToText(&b, merged[n]); err != nil {
			t.Fatal(err)
		}
	}
	if *update {
		if err := os.WriteFile(scrapeFile, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	old, err := os.ReadFile(scrapeFile)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/convert/queuetest -run TestQueueMetrics -update writes it)", err)
	}
	was, err := promtest.Parse(string(old))
	if err != nil {
		t.Fatalf("%s: %v", scrapeFile, err)
	}
	now := &promtest.Scrape{Families: merged}
	if a, b := strings.Join(was.Names(), "\n"), strings.Join(now.Names(), "\n"); a != b {
		t.Errorf("the workers' metric families are not those of %s (rewrite it with -update, then check the dashboard):\nrecorded:\n%s\nnow:\n%s", scrapeFile, a, b)
	}
}

// TestQueueKillRestartMetrics: a worker killed with kill -9 in the middle
// of an upload and started again (under the same name, as a restarted
// container is) gets the disk's message again after --ack-wait: its
// metrics count a redelivered message (and the queue's gauge shows it
// while the disk runs), its JSON records say it took the disk over from
// the delivery that never ended, and the disk ends right, its upload
// continued (parts reused, counted with the bytes uploaded).
func TestQueueKillRestartMetrics(t *testing.T) {
	e := newEnv(t)
	big := randomDisk(t, filepath.Join(e.dir, "big.raw"), 48*mib, 5*mib, 6*mib)
	out := "s3://" + e.bucket + "/big.raw"
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{jsonLine("source", big, "output", out)})
	e.proxy.Inject(300*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	e.observedWorker("a", "--ack-wait", "2s")
	wait := e.submit(manifest, "--wait", "--json", "--upload-concurrency", "2")
	e.waitFor(60*time.Second, "the upload to get going", func() bool { return e.proxy.Done("UploadPart") >= 3 })
	e.signal("a", syscall.SIGKILL)
	a := e.observedWorker("a", "--ack-wait", "2s")
	sc := scrapeWhileRunning(t, 50*time.Millisecond, a)
	r := wait()
	scrapes := sc.end()
	if r.code != 0 {
		t.Fatalf("batch --wait: exit %d\n%s", r.code, r.stderr)
	}
	got, _ := parse(t, r.stdout)
	o := got[out]
	if o.Status != "done" || o.Target == nil || o.Target.PartsReused == 0 {
		t.Fatalf("not resumed: %+v %+v", o, o.Target)
	}
	var final map[string]*promtest.Scrape
	e.waitFor(30*time.Second, "the restarted worker to count the disk", func() bool {
		final = scrapeAll(t, []*observed{a})
		return final["a"].Value("convert_disks_total", "result", "done") == 1
	})
	m := final["a"]
	if v := m.Value("convert_redelivered_messages_total"); v != 1 {
		t.Errorf("convert_redelivered_messages_total %v, want 1", v)
	}
	if v := m.Value("convert_disks_taken_over_total"); v != 1 {
		t.Errorf("convert_disks_taken_over_total %v, want 1", v)
	}
	if v, want := m.Value("convert_upload_bytes_total"), float64(e.objectBytes()); v != want {
		t.Errorf("convert_upload_bytes_total %v, want the object's %v", v, want)
	}
	if m.Value("convert_upload_bytes_total", "how", "reused") == 0 {
		t.Error("no reused part counted")
	}
	seen := 0.0
	for _, s := range scrapes["a"] {
		seen = max(seen, s.Value("convert_queue_redelivered_messages"))
	}
	if seen != 1 {
		t.Errorf("the queue's redelivered messages, at most %v while the disk ran again; want 1", seen)
	}
	var taken, done map[string]any
	for _, rec := range e.records("a") {
		switch rec["msg"] {
		case "taken over":
			taken = rec
		case "done":
			done = rec
		}
	}
	if taken == nil || taken["output"] != out || taken["worker"] != "a" || taken["delivery"] != 2.0 || taken["from_worker"] != "a" || taken["from_delivery"] != 1.0 {
		t.Errorf("the taken-over record: %v", taken)
	}
	if done == nil || done["delivery"] != 2.0 || done["parts_reused"] == nil || done["parts_reused"].(float64) == 0 {
		t.Errorf("the done record: %v", done)
	}
	if e.objectRawSHA("big.raw", "") != testkit.RawSHA256(t, big) {
		t.Error("the object differs from the source")
	}
	e.noLeftovers(1)
}
