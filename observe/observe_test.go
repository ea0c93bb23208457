package observe_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"vmimport/batch"
	"vmimport/internal/kv"
	"vmimport/internal/objstore"
	"vmimport/internal/promtest"
	"vmimport/job"
	"vmimport/observe"
	"vmimport/upload"
)

// syncBuffer is a log destination safe for the batch's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("a line that is no JSON record: %q", sc.Text())
		}
		out = append(out, r)
	}
	return out
}

// TestLocalBatch: a local batch observed in process (uploads into the
// memory store, one of them through two 503s, a file, a source that cannot
// be reached), scraped over HTTP: the counters end at the batch's totals
// (bytes uploaded the objects' sizes, written the outputs', read the
// outcomes'), the retries by reason, nothing running and no memory held at
// the end; a rerun counts its skips. Every record is JSON naming its disk,
// and the source's password appears nowhere.
func TestLocalBatch(t *testing.T) {
	m := &objstore.Memory{}
	m.Bucket("mem-bucket")
	m.Fault = func(op, key string, n int) error {
		if op == "UploadPart" && (n == 2 || n == 3) {
			return objstore.Injected(op, 503, "SlowDown")
		}
		return nil
	}
	clients := upload.NewClients(upload.Config{Backend: m.Bucket, Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""), MaxBackoff: 50 * time.Millisecond})
	defer clients.Close()
	dir := t.TempDir()
	var items []batch.Item
	for i := range 3 {
		b := make([]byte, (9+i)<<20)
		rand.Read(b[:4<<20])
		src := filepath.Join(dir, fmt.Sprintf("d%d.raw", i))
		if err := os.WriteFile(src, b, 0o644); err != nil {
			t.Fatal(err)
		}
		spec := job.Spec{Source: src, Output: fmt.Sprintf("s3://mem-bucket/d%d.raw", i), Format: "raw", Check: "off", Workers: 2,
			Upload: job.UploadSpec{Store: job.Store{Endpoint: "http://127.0.0.1:9", Region: "us-east-1"}, PartSize: 5 << 20}}
		if i == 2 {
			spec.Output, spec.Upload = filepath.Join(dir, "d2.out.raw"), job.UploadSpec{}
		}
		items = append(items, batch.Item{Line: i + 1, Spec: spec})
	}
	const secret = "hunter2secret"
	gone := httptest.NewServer(http.NotFoundHandler())
	defer gone.Close()
	items = append(items, batch.Item{Line: 4, Spec: job.Spec{Source: strings.Replace(gone.URL, "://", "://user:"+secret+"@", 1) + "/gone.raw", Output: filepath.Join(dir, "gone.raw"), Format: "raw", Check: "off"}})

	reg := prometheus.NewRegistry()
	metrics := observe.NewMetrics(reg, "test")
	budget := job.NewBudget(128 << 20)
	metrics.WatchBudget(budget)
	srv, err := observe.Serve("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var logs syncBuffer
	obs := observe.New(metrics, slog.New(slog.NewJSONHandler(&logs, nil)), "host-1")
	o := batch.Options{Jobs: 2, Budget: budget, State: kv.Dir(filepath.Join(dir, "state")), UploadState: kv.Dir(filepath.Join(dir, "uploads")),
		Clients: clients, Events: obs.Batch}
	outs, sum, err := batch.Run(context.Background(), items, o)
	if err != nil || sum.Done != 3 || sum.Failed != 1 {
		t.Fatalf("%v, %+v", err, sum)
	}
	var read, uploaded float64
	for _, oc := range outs {
		if oc.Stats != nil {
			read += float64(oc.Stats.Read)
		}
	}
	for i := range 2 {
		uploaded += float64(len(m.Object("mem-bucket", fmt.Sprintf("d%d.raw", i))))
	}
	fi, err := os.Stat(filepath.Join(dir, "d2.out.raw"))
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + srv.Addr() + "/metrics"
	sc, err := promtest.Get(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"convert_disks_total", []string{"result", "done"}, 3},
		{"convert_disks_total", []string{"result", "failed"}, 1},
		{"convert_disks_running", nil, 0},
		{"convert_disks_in_phase", nil, 0},
		{"convert_read_bytes_total", nil, read},
		{"convert_upload_bytes_total", nil, uploaded},
		{"convert_written_bytes_total", []string{"output", "upload"}, uploaded},
		{"convert_written_bytes_total", []string{"output", "file"}, float64(fi.Size())},
		{"convert_upload_part_retries_total", []string{"reason", "SlowDown"}, 2},
		{"convert_store_retries_total", []string{"op", "UploadPart"}, 2},
		{"convert_disk_duration_seconds", []string{"result", "done"}, 3},
		{"convert_disk_duration_seconds", []string{"result", "failed"}, 1},
		{"convert_memory_budget_used_bytes", nil, 0},
		{"convert_memory_budget_bytes", nil, 128 << 20},
		{"convert_build_info", []string{"version", "test"}, 1},
	} {
		if got := sc.Value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if sc.Value("convert_zero_bytes_skipped_total") == 0 || sc.Value("convert_upload_part_duration_seconds") == 0 || sc.Value("convert_phase_duration_seconds", "phase", "converting") != 3 {
		t.Errorf("zero bytes, part durations or phases not counted:\n%s", sc.Text)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %v %v", path, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}

	// A rerun: three skipped, the unreachable one failed again.
	if _, sum, err = batch.Run(context.Background(), items, o); err != nil || sum.Skipped != 3 {
		t.Fatalf("rerun: %v, %+v", err, sum)
	}
	if sc, err = promtest.Get(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	if sc.Value("convert_disks_total", "result", "skipped") != 3 || sc.Value("convert_disks_total", "result", "failed") != 2 || sc.Value("convert_upload_bytes_total") != uploaded {
		t.Errorf("after the rerun:\n%s", sc.Text)
	}

	ends := map[string]int{}
	for _, r := range logs.records(t) {
		if r["disk"] == nil || r["source"] == nil || r["output"] == nil || r["worker"] != "host-1" || r["line"] == nil {
			t.Errorf("a record without its disk: %v", r)
		}
		switch r["msg"] {
		case "done", "skipped", "failed":
			ends[r["msg"].(string)]++
			if r["msg"] == "failed" && (r["error"] == nil || r["level"] != "ERROR") {
				t.Errorf("a failed record without its error: %v", r)
			}
		}
	}
	if ends["done"] != 3 || ends["skipped"] != 3 || ends["failed"] != 2 {
		t.Errorf("end records %v", ends)
	}
	if strings.Contains(logs.b.String(), secret) {
		t.Errorf("a record holds the source's password:\n%s", logs.b.String())
	}
}

// TestReadyz: /readyz answers 503 with the reason until ready says so.
func TestReadyz(t *testing.T) {
	var mu sync.Mutex
	why := fmt.Errorf("not connected to the queue")
	srv, err := observe.Serve("127.0.0.1:0", prometheus.NewRegistry(), func() error { mu.Lock(); defer mu.Unlock(); return why })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected") {
		t.Errorf("not ready: %d %q", code, body)
	}
	mu.Lock()
	why = nil
	mu.Unlock()
	if code, _ := get(); code != http.StatusOK {
		t.Errorf("ready: %d", code)
	}
}
