// Package queuetest runs `convert batch --queue` and `convert worker` (the
// real binary, several worker processes) against a real nats-server with
// JetStream and a real S3 server (versitygw), both on 127.0.0.1: disks
// spread over workers, a worker killed mid-upload and its upload resumed
// by another, the server restarted mid-run, a broken image failed once.
package queuetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vmimport/batch"
	"vmimport/internal/jdcloudtest"
	"vmimport/internal/natstest"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

var (
	srv *s3test.Server
	bin string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "convert-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// With the race detector when the tests run with it: workers,
		// deliveries and leases watched on the real paths.
		if bin, err = s3test.BuildConvert(dir, s3test.Race); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return s3test.Main(m, &srv)
	}())
}

const mib = int64(1) << 20

// env is one test's queue, bucket and processes.
type env struct {
	t      *testing.T
	nats   *natstest.Server
	bucket string
	home   string
	proxy  *s3test.Proxy
	dir    string
	// extra environment of every process (JDCLOUD_* keys, ...)
	extra []string
	// strict leaves the workers' limits to the test: without it, they may
	// read and write anywhere on this machine and in the test's bucket.
	strict bool
	// queueURL, if set, is the queue's URL for the workers and the
	// submitter (tls://...); else nats.URL.
	queueURL string

	mu      sync.Mutex
	workers map[string]*workerProc
}

type workerProc struct {
	cmd  *exec.Cmd
	log  string // its stderr
	done chan struct{}
}

func newEnv(t *testing.T) *env {
	if testing.Short() {
		t.Skip("starts nats-server, versitygw and several convert processes")
	}
	return newEnvWith(t, natstest.Start(t))
}

// newEnvWith is newEnv on a server of the test's own.
func newEnvWith(t *testing.T, nats *natstest.Server) *env {
	if testing.Short() {
		t.Skip("starts nats-server, versitygw and several convert processes")
	}
	testkit.Need(t, "qemu-img")
	s3test.Need(t, srv)
	e := &env{t: t, nats: nats, bucket: srv.Bucket(t), home: t.TempDir(), proxy: s3test.NewProxy(srv), dir: t.TempDir(), workers: map[string]*workerProc{}}
	t.Cleanup(e.proxy.Close)
	t.Cleanup(e.stopWorkers)
	return e
}

// environ is what every process gets: credentials, and the store's
// endpoint from the environment (messages carry none).
func (e *env) environ() []string {
	env := append(append(srv.Env(e.home), "AWS_ENDPOINT_URL_S3="+e.proxy.URL), e.extra...)
	if !e.strict {
		env = append(env, "CONVERT_ALLOW_SOURCE=/", "CONVERT_ALLOW_OUTPUT=/,s3://"+e.bucket+"/")
	}
	return env
}

// url is the queue's URL.
func (e *env) url() string {
	if e.queueURL != "" {
		return e.queueURL
	}
	return e.nats.URL
}

func (e *env) command(args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = e.environ()
	return cmd
}

// worker starts a worker process named name.
func (e *env) worker(name string, args ...string) {
	e.t.Helper()
	cmd := e.command(append([]string{"worker", "--queue", e.url(), "--name", name, "--jobs", "1", "--memory", "256M"}, args...)...)
	p := &workerProc{cmd: cmd, log: filepath.Join(e.dir, "worker-"+name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.workers[name] = p
	e.mu.Unlock()
}

// signal sends sig to worker name and waits for it to exit.
func (e *env) signal(name string, sig syscall.Signal) int {
	e.t.Helper()
	e.mu.Lock()
	p := e.workers[name]
	e.mu.Unlock()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		e.t.Fatalf("worker %s did not stop on %v", name, sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (e *env) stopWorkers() {
	e.mu.Lock()
	ws := e.workers
	e.mu.Unlock()
	for name, p := range ws {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if e.t.Failed() || testing.Verbose() {
			b, _ := os.ReadFile(p.log)
			e.t.Logf("worker %s:\n%s", name, b)
		}
	}
}

// result is one run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	if cmd.ProcessState == nil {
		e.t.Fatal("convert did not run")
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// submit runs `convert batch MANIFEST --queue ... args` in the background.
func (e *env) submit(manifest string, args ...string) func() result {
	cmd := e.command(append([]string{"batch", manifest, "--queue", e.url(), "--check", "off", "--progress", "never"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	return func() result {
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			<-done
			e.t.Fatalf("convert batch --wait did not end\n%s", errb.String())
		}
		return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
	}
}

// parse reads --json output (batch.ReadJSON), the disks by output.
func parse(t *testing.T, stdout string) (map[string]batch.Outcome, batch.Summary) {
	t.Helper()
	outs, sum, err := batch.ReadJSON(strings.NewReader(stdout))
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	return batch.ByOutput(outs), sum
}

// status is the part of `convert batch status --json` the tests read.
type status struct {
	Key      string `json:"key"`
	Output   string `json:"output"`
	State    string `json:"state"`
	Worker   string `json:"worker"`
	Delivery int    `json:"delivery"`
	Stale    bool   `json:"stale"`
	Outcome  *batch.Outcome
}

func (e *env) statuses() (map[string]status, int) {
	e.t.Helper()
	r := e.run("batch", "status", "--queue", e.nats.URL, "--json")
	if r.code != 0 {
		e.t.Fatalf("batch status: exit %d\n%s", r.code, r.stderr)
	}
	all := map[string]status{}
	messages := -1
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if strings.HasPrefix(line, `{"summary"`) {
			var s struct{ Summary struct{ Messages int } }
			json.Unmarshal([]byte(line), &s)
			messages = s.Summary.Messages
			continue
		}
		var s status
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			e.t.Fatalf("%v: %s", err, line)
		}
		all[s.Output] = s
	}
	return all, messages
}

// randomDisk writes a sparse RAW disk of size bytes with random data in
// runs of n bytes every stride bytes.
func randomDisk(t testing.TB, path string, size, n, stride int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	for o := int64(0); o+n <= size; o += stride {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, o); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func jsonLine(kv ...any) string {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func writeManifest(t testing.TB, path string, lines []string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// objectRawSHA is the SHA-256 of the guest bytes of an object: itself for
// RAW, read through qemu-img for QCOW2.
func (e *env) objectRawSHA(key, format string) string {
	e.t.Helper()
	return srv.GuestSHA256(e.t, e.bucket, key, format)
}

// noLeftovers checks that the bucket holds only the outputs: no incomplete
// upload, no zero object.
func (e *env) noLeftovers(outputs int) {
	e.t.Helper()
	if p := srv.Pending(e.t, e.bucket); len(p) != 0 {
		e.t.Errorf("incomplete uploads left: %v", p)
	}
	if keys := srv.Keys(e.t, e.bucket); len(keys) != outputs {
		e.t.Errorf("objects in the bucket: %v, want %d outputs", keys, outputs)
	}
}

// TestQueueEightDisks: eight disks in several formats, three worker
// processes: every object has the source's bytes, --wait prints a line per
// disk and exits 0, the bucket holds every disk's status; a resubmission
// queues nothing.
func TestQueueEightDisks(t *testing.T) {
	e := newEnv(t)
	type disk struct{ src, format, key string }
	var disks []disk
	var lines []string
	for i := range 8 {
		raw := randomDisk(t, filepath.Join(e.dir, fmt.Sprintf("d%d.raw", i)), 24*mib, 1*mib, 3*mib)
		src := raw
		switch i % 4 {
		case 1:
			src = testkit.Convert(t, raw, filepath.Join(e.dir, fmt.Sprintf("d%d.qcow2", i)), "qcow2")
		case 2:
			src = testkit.Convert(t, raw, filepath.Join(e.dir, fmt.Sprintf("d%d.vmdk", i)), "vmdk", "-o", "subformat=streamOptimized")
		case 3:
			src = testkit.Convert(t, raw, filepath.Join(e.dir, fmt.Sprintf("d%d.vhdx", i)), "vhdx")
		}
		format := []string{"raw", "qcow2"}[i%2]
		d := disk{src: src, format: format, key: fmt.Sprintf("disks/d%d.%s", i, format)}
		disks = append(disks, d)
		lines = append(lines, jsonLine("source", src, "output", "s3://"+e.bucket+"/"+d.key, "output-format", format))
	}
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), lines)
	for _, w := range []string{"w1", "w2", "w3"} {
		e.worker(w)
	}
	r := e.submit(manifest, "--wait", "--json")()
	if r.code != 0 {
		t.Fatalf("batch --queue --wait: exit %d\n%s", r.code, r.stderr)
	}
	got, sum := parse(t, r.stdout)
	if sum.Disks != 8 || sum.Done != 8 {
		t.Fatalf("summary %+v\n%s", sum, r.stdout)
	}
	st, messages := e.statuses()
	workers := map[string]bool{}
	for _, d := range disks {
		out := "s3://" + e.bucket + "/" + d.key
		if o := got[out]; o.Status != "done" || o.Bytes == 0 || o.Target == nil {
			t.Errorf("%s: --wait's line %+v", d.key, o)
		}
		if s := st[out]; s.State != "done" || s.Worker == "" || s.Outcome == nil || s.Outcome.Status != "done" {
			t.Errorf("%s: status in the bucket %+v", d.key, s)
		} else {
			workers[s.Worker] = true
		}
		if e.objectRawSHA(d.key, d.format) != testkit.RawSHA256(t, d.src) {
			t.Errorf("%s: the object's bytes differ from the source's", d.key)
		}
	}
	t.Logf("disks done by %d workers: %v", len(workers), workers)
	if messages != 0 {
		t.Errorf("%d messages left in the queue", messages)
	}
	e.noLeftovers(8)
	// The presigned download links stay out of the shared state: not in
	// the statuses, not in what --wait prints from them.
	if s := e.run("batch", "status", "--queue", e.nats.URL, "--json"); strings.Contains(s.stdout+r.stdout, "X-Amz-Signature") {
		t.Errorf("presigned links in the queue's statuses:\n%s", s.stdout)
	}

	// The same manifest again: nothing queued, every disk skipped.
	r = e.submit(manifest, "--wait", "--json")()
	got, sum = parse(t, r.stdout)
	if r.code != 0 || sum.Skipped != 8 {
		t.Fatalf("resubmission: exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	for out, o := range got {
		if o.Status != "skipped" {
			t.Errorf("resubmission: %s %s", out, o.Status)
		}
	}
	if strings.Contains(r.stdout, "X-Amz-Signature") {
		t.Errorf("presigned links in the workers' bookkeeping:\n%s", r.stdout)
	}
	if _, messages := e.statuses(); messages != 0 {
		t.Errorf("the resubmission queued %d messages", messages)
	}
}

// TestQueueKillWorker: kill -9 a worker in the middle of an upload: after
// --ack-wait its disk goes to another worker, which continues the
// multipart upload (fewer parts sent than the disk has) from the state in
// the bucket; the object is right and no incomplete upload is left.
func TestQueueKillWorker(t *testing.T) {
	e := newEnv(t)
	big := randomDisk(t, filepath.Join(e.dir, "big.raw"), 96*mib, 7*mib, 8*mib)
	out := "s3://" + e.bucket + "/big.raw"
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{jsonLine("source", big, "output", out)})
	e.proxy.Inject(400*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	e.worker("a", "--ack-wait", "2s", "--progress-interval", "200ms")
	wait := e.submit(manifest, "--wait", "--json", "--upload-concurrency", "2")
	e.waitFor(60*time.Second, "the upload to get going", func() bool { return e.proxy.Done("UploadPart") >= 4 })
	if n := e.proxy.Done("UploadPart"); n < 4 {
		t.Fatalf("the upload did not get going: %d parts", n)
	}
	e.signal("a", syscall.SIGKILL)
	before := e.proxy.Done("UploadPart")
	if p := srv.Pending(t, e.bucket); len(p) != 1 {
		t.Fatalf("after kill -9: incomplete uploads %v, want 1", p)
	}
	// Its log showed the disk moving.
	if b, _ := os.ReadFile(filepath.Join(e.dir, "worker-a.log")); !regexp.MustCompile(`worker a: \S+ -> \S+: progress: converting, \S+ \S+ / 96.0 MiB \(\d+%\)`).Match(b) {
		t.Errorf("no progress lines in the worker's log:\n%s", b)
	}
	// The disk's status, still running, is told stale once a's
	// heartbeats are missed.
	e.waitFor(30*time.Second, "the status to go stale", func() bool { st, _ := e.statuses(); return st[out].Stale })
	if s := e.run("batch", "status", "--queue", e.nats.URL); !strings.Contains(s.stdout, "stale") || !strings.Contains(s.stdout, "no word from worker a since") || !strings.Contains(s.stdout, "1 running (1 stale)") {
		t.Errorf("batch status does not tell the stale disk:\n%s", s.stdout)
	}
	e.proxy.Inject(0, nil)
	// b is told to share the links: they are in the status.
	e.worker("b", "--ack-wait", "2s", "--share-links")
	r := wait()
	if r.code != 0 {
		t.Fatalf("batch --wait: exit %d\n%s", r.code, r.stderr)
	}
	got, _ := parse(t, r.stdout)
	o := got[out]
	after := e.proxy.Done("UploadPart") - before
	t.Logf("parts: %d uploaded before the kill, %d after it; the disk has %+v", before, after, o.Target)
	if o.Status != "done" || o.Target == nil || o.Target.PartsReused < 4 || o.Target.PartsSent >= o.Target.Parts || after >= o.Target.Parts {
		t.Errorf("not resumed: %+v %+v", o, o.Target)
	}
	st, _ := e.statuses()
	if s := st[out]; s.Worker != "b" || s.Delivery < 2 || s.Stale {
		t.Errorf("status %+v: want done by b on a redelivery", s)
	} else if s.Outcome == nil || s.Outcome.Target == nil || !strings.Contains(s.Outcome.Target.PresignedURL, "X-Amz-Signature") {
		t.Errorf("--share-links: no presigned link in the status %+v", s.Outcome)
	}
	if e.objectRawSHA("big.raw", "") != testkit.RawSHA256(t, big) {
		t.Error("the resumed object differs from the source")
	}
	e.noLeftovers(1)
}

// TestQueueServerRestart: nats-server is killed and restarted (file
// storage) while workers convert and --wait follows: nothing is lost, the
// batch completes.
func TestQueueServerRestart(t *testing.T) {
	e := newEnv(t)
	var lines []string
	var srcs []string
	for i := range 6 {
		src := randomDisk(t, filepath.Join(e.dir, fmt.Sprintf("d%d.raw", i)), 24*mib, 2*mib, 4*mib)
		srcs = append(srcs, src)
		lines = append(lines, jsonLine("source", src, "output", fmt.Sprintf("s3://%s/d%d.raw", e.bucket, i)))
	}
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), lines)
	e.proxy.Inject(300*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	e.worker("w1", "--ack-wait", "10s", "--retry-delay", "500ms")
	e.worker("w2", "--ack-wait", "10s", "--retry-delay", "500ms")
	wait := e.submit(manifest, "--wait", "--json", "--upload-concurrency", "1")
	e.waitFor(60*time.Second, "the uploads to get going", func() bool { return e.proxy.Done("UploadPart") >= 3 })
	e.nats.Kill()
	t.Logf("nats-server killed after %d parts", e.proxy.Done("UploadPart"))
	time.Sleep(time.Second) // an outage of a second, not a wait
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.nats.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("nats-server restarted after %d parts", e.proxy.Done("UploadPart"))
	e.proxy.Inject(0, nil)
	r := wait()
	if r.code != 0 {
		t.Fatalf("batch --wait across the restart: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	got, sum := parse(t, r.stdout)
	if sum.Done != 6 {
		t.Fatalf("summary %+v", sum)
	}
	for i, src := range srcs {
		key := fmt.Sprintf("d%d.raw", i)
		if o := got["s3://"+e.bucket+"/"+key]; o.Status != "done" {
			t.Errorf("%s: %+v", key, o)
		}
		if e.objectRawSHA(key, "") != testkit.RawSHA256(t, src) {
			t.Errorf("%s: the object differs from the source", key)
		}
	}
	e.noLeftovers(6)
}

// TestQueuePoison: a broken image fails once, with its error, and is not
// delivered again; the disk beside it is done; exit 1 as the local batch.
func TestQueuePoison(t *testing.T) {
	e := newEnv(t)
	good := randomDisk(t, filepath.Join(e.dir, "good.raw"), 8*mib, 256<<10, mib)
	q := testkit.Convert(t, good, filepath.Join(e.dir, "a.qcow2"), "qcow2")
	b, _ := os.ReadFile(q)
	bad := filepath.Join(e.dir, "bad.qcow2")
	os.WriteFile(bad, b[:len(b)/2], 0o644)
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{
		jsonLine("source", bad, "output", "s3://"+e.bucket+"/bad.raw"),
		jsonLine("source", good, "output", "s3://"+e.bucket+"/good.raw"),
	})
	e.worker("w", "--ack-wait", "2s", "--retry-delay", "200ms", "--max-deliveries", "3")
	r := e.submit(manifest, "--wait", "--json")()
	got, sum := parse(t, r.stdout)
	if r.code != 1 || sum.Done != 1 || sum.Failed != 1 {
		t.Fatalf("exit %d, %+v\n%s\n%s", r.code, sum, r.stdout, r.stderr)
	}
	if o := got["s3://"+e.bucket+"/bad.raw"]; o.Status != "failed" || !strings.Contains(o.Error, "bad.qcow2") || o.Line != 1 {
		t.Errorf("the broken image: %+v", o)
	}
	// Once its message is gone from the stream, the broken image cannot
	// be delivered again.
	var st map[string]status
	e.waitFor(30*time.Second, "the queue to empty", func() bool {
		var messages int
		st, messages = e.statuses()
		return messages == 0
	})
	if s := st["s3://"+e.bucket+"/bad.raw"]; s.State != "failed" || s.Delivery != 1 {
		t.Errorf("the broken image was delivered again: %+v", s)
	}
	e.noLeftovers(1)
}

// TestQueueSigterm: SIGTERM lets a running disk go on for --drain-timeout,
// then hands it back to the queue with its upload kept; the worker exits 0
// and the next worker continues the upload.
func TestQueueSigterm(t *testing.T) {
	e := newEnv(t)
	big := randomDisk(t, filepath.Join(e.dir, "big.raw"), 96*mib, 7*mib, 8*mib)
	out := "s3://" + e.bucket + "/big.raw"
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{jsonLine("source", big, "output", out)})
	e.proxy.Inject(400*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	e.worker("a", "--drain-timeout", "300ms")
	wait := e.submit(manifest, "--wait", "--json", "--upload-concurrency", "2")
	e.waitFor(60*time.Second, "the upload to get going", func() bool { return e.proxy.Done("UploadPart") >= 4 })
	start := time.Now()
	if code := e.signal("a", syscall.SIGTERM); code != 0 {
		t.Errorf("worker a: exit %d after SIGTERM, want 0", code)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("worker a took %s to stop", d)
	}
	st, messages := e.statuses()
	if s := st[out]; s.State != "queued" || messages != 1 {
		t.Errorf("after SIGTERM: status %+v, %d messages; want queued, 1", s, messages)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 1 {
		t.Errorf("after SIGTERM: incomplete uploads %v, want the one kept", p)
	}
	e.proxy.Inject(0, nil)
	e.worker("b")
	r := wait()
	got, _ := parse(t, r.stdout)
	if o := got[out]; r.code != 0 || o.Status != "done" || o.Target == nil || o.Target.PartsReused < 4 {
		t.Errorf("exit %d, %+v %+v\n%s", r.code, o, o.Target, r.stderr)
	}
	if e.objectRawSHA("big.raw", "") != testkit.RawSHA256(t, big) {
		t.Error("the object differs from the source")
	}
	e.noLeftovers(1)
}

// TestQueueImportWait: records that import are imported by the worker
// (credentials from the worker's environment), which follows the task
// after giving back the disk's slot; --wait reports the image, and a task
// that fails fails its disk (exit 1), as in the local batch.
func TestQueueImportWait(t *testing.T) {
	e := newEnv(t)
	api := jdcloudtest.Start(t, jdcloudtest.Options{})
	api.FailTasks(func(im jdcloudtest.Import) string {
		if im.Fields["imageName"] == "bad" {
			return "the image does not boot"
		}
		return ""
	})
	sample := filepath.Join("..", "..", "..", "testdata", "sample.qcow2")
	abs, _ := filepath.Abs(sample)
	manifest := writeManifest(t, filepath.Join(e.dir, "disks.jsonl"), []string{
		jsonLine("source", abs, "output", "s3://"+e.bucket+"/good.qcow2", "output-format", "qcow2", "import", true, "image-name", "good"),
		jsonLine("source", abs, "output", "s3://"+e.bucket+"/bad.qcow2", "output-format", "qcow2", "import", true, "image-name", "bad"),
	})
	e.extra = []string{"JDCLOUD_ACCESS_KEY_ID=" + api.AccessKey, "JDCLOUD_SECRET_ACCESS_KEY=" + api.SecretKey, "CONVERT_ALLOW_ENDPOINT=" + api.URL}
	e.worker("w", "--jobs", "2")
	cmd := e.command("batch", manifest, "--queue", e.nats.URL, "--progress", "never", "--check", "warn", "--region", srv.Region,
		"--jdcloud-api-endpoint", api.URL, "--poll-interval", "5ms", "--wait", "--json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	lines, _ := parse(t, out.String())
	if code := cmd.ProcessState.ExitCode(); code != 1 || len(lines) != 2 {
		t.Fatalf("exit %d, %d lines, want 1 and 2\n%s\n%s", code, len(lines), out.String(), errb.String())
	}
	for _, o := range lines {
		switch o.Output {
		case "s3://" + e.bucket + "/good.qcow2":
			if o.Status != "done" || o.Import == nil || o.Import.ImageID == "" || o.Import.Status != "finished" {
				t.Errorf("good: %+v %+v", o, o.Import)
			}
		case "s3://" + e.bucket + "/bad.qcow2":
			if o.Status != "failed" || !strings.Contains(o.Error, "does not boot") {
				t.Errorf("bad: %+v", o)
			}
		default:
			t.Errorf("unexpected line %+v", o)
		}
	}
	if n := len(api.Imports()); n != 2 {
		t.Errorf("%d ImportImage requests, want 2", n)
	}
}

// waitFor polls cond until it holds, failing the test after d.
func (e *env) waitFor(d time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
