// Package uploadtest runs the convert binary against a real S3 server
// (versitygw on 127.0.0.1): uploads, kill -9 and --resume, failures that
// must leave nothing behind, bytes on the wire, peak memory.
package uploadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

var (
	srv *s3test.Server
	bin string
)

func TestMain(m *testing.M) { os.Exit(s3test.MainWithConvert(m, &srv, &bin)) }

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
)

// run is a stretch of random data in a test disk.
type run struct{ off, n int64 }

// makeDisk writes a sparse RAW disk with an MBR partition table and random
// data in the given runs, quickly (testkit.MakeDisk builds a real file
// system, which is too slow under the race detector at these sizes).
func makeDisk(t *testing.T, dir string, size int64, runs []run) string {
	t.Helper()
	testkit.Need(t, "sfdisk")
	path := filepath.Join(dir, "disk.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, mib)
	for _, r := range runs {
		for off := r.off; off < r.off+r.n; off += mib {
			b := buf[:min(mib, r.off+r.n-off)]
			rand.Read(b)
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command("sfdisk", "-q", path)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: dos\nstart=2048, size=%d, type=83, bootable\n", size/512-2048))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return path
}

// result is one run of the binary.
type result struct {
	code   int
	stdout string
	stderr string
	maxRSS int64 // bytes
}

type summary struct {
	Stats struct {
		Data int64 `json:"data"`
	} `json:"stats"`
	Target struct {
		Size         int64  `json:"size"`
		PartSize     int64  `json:"part_size"`
		Parts        int    `json:"parts"`
		PartsCopied  int    `json:"parts_copied"`
		PartsReused  int    `json:"parts_reused"`
		PresignedURL string `json:"presigned_url"`
		Verified     bool   `json:"verified"`
		UploadID     string `json:"upload_id"`
	} `json:"target"`
}

type env struct {
	t      *testing.T
	bucket string
	home   string
	proxy  *s3test.Proxy
	bin    string // the binary it runs
}

func newEnv(t *testing.T) *env {
	s3test.Need(t, srv)
	testkit.Need(t, "qemu-img")
	e := &env{t: t, bucket: srv.Bucket(t), home: t.TempDir(), proxy: s3test.NewProxy(srv), bin: bin}
	t.Cleanup(e.proxy.Close)
	return e
}

func (e *env) command(args ...string) *exec.Cmd {
	args = append(args, "--endpoint", e.proxy.URL)
	if args[0] != "uploads" {
		// The test disks hold no operating system: the import check
		// (strict for buckets by default) only warns.
		args = append(args, "--progress", "never", "--check", "warn")
	}
	cmd := exec.Command(e.bin, args...)
	cmd.Env = srv.Env(e.home)
	return cmd
}

// slowParts delays every UploadPart's answer by d (the part is stored
// first): a slow link, with parts in flight when a run is killed.
func (e *env) slowParts(d time.Duration) {
	e.proxy.Inject(d, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
}

// killAfterParts runs convert with args until the proxy has seen n
// UploadParts answered (60 s at most), kills it with -9, and returns how
// many were answered by then.
func (e *env) killAfterParts(n int, args ...string) int {
	e.t.Helper()
	cmd := e.command(args...)
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for e.proxy.Done("UploadPart") < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	return e.proxy.Done("UploadPart")
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
		r.maxRSS = testkit.MaxRSS(cmd.ProcessState)
	} else if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) mustRun(args ...string) (result, summary) {
	e.t.Helper()
	r := e.run(append(args, "--json")...)
	if r.code != 0 {
		e.t.Fatalf("convert %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	var s summary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		e.t.Fatalf("convert --json: %v\n%s", err, r.stdout)
	}
	return r, s
}

func (e *env) objectSHA(key string) string {
	e.t.Helper()
	out, err := srv.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	if err != nil {
		e.t.Fatal(err)
	}
	defer out.Body.Close()
	return hashReader(e.t, out.Body)
}

func hashReader(t *testing.T, r io.Reader) string {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// nothingLeft checks the bucket holds exactly keys and no incomplete upload.
func (e *env) nothingLeft(keys ...string) {
	e.t.Helper()
	if got := srv.Keys(e.t, e.bucket); !slices.Equal(got, keys) {
		e.t.Errorf("bucket holds %v, want %v", got, keys)
	}
	if p := srv.Pending(e.t, e.bucket); len(p) != 0 {
		e.t.Errorf("incomplete uploads left: %v", p)
	}
}

// checkRSS holds the peak memory of a run to what K parts in flight may
// take: (K+2) x part size + 64 MiB. A binary built with the race detector
// takes several times its memory: its runs are only logged (the memory
// tests run the plain binary: TestLargePartsBoundedMemory).
func checkRSS(t *testing.T, r result, k int, partSize int64) {
	t.Helper()
	bound := int64(k+2)*partSize + 64<<20
	t.Logf("peak RSS %d MiB (bound %d MiB, race detector %v)", r.maxRSS>>20, bound>>20, s3test.Race)
	if r.maxRSS > bound && !s3test.Race {
		t.Errorf("peak RSS %d MiB is above (K+2) x part size + 64 MiB = %d MiB", r.maxRSS>>20, bound>>20)
	}
}

func TestUploadRAWFromRawQCOW2VMDK(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 160*mib, []run{{mib, 20 * mib}, {50*mib + 12*kib, 4 * kib}, {70*mib + 300*kib, 12 * mib}, {159 * mib, mib}})
	want := testkit.RawSHA256(t, disk)
	qcow := testkit.Convert(t, disk, filepath.Join(dir, "disk.qcow2"), "qcow2")
	vmdk := testkit.Convert(t, disk, filepath.Join(dir, "disk.vmdk"), "vmdk")
	for _, src := range []string{disk, qcow, vmdk} {
		key := "img/" + filepath.Base(src) + ".raw"
		before := e.proxy.Sent.Load()
		r, s := e.mustRun(src, "-O", "raw", "-o", "s3://"+e.bucket+"/"+key, "--verify")
		sent := e.proxy.Sent.Load() - before
		if got := e.objectSHA(key); got != want {
			t.Fatalf("%s: object sha256 %s, qemu-img's conversion %s", src, got, want)
		}
		if !s.Target.Verified || s.Target.PartsCopied == 0 {
			t.Errorf("%s: %+v", src, s.Target)
		}
		resp, err := http.Get(s.Target.PresignedURL)
		if err != nil {
			t.Fatal(err)
		}
		got := hashReader(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || got != want {
			t.Errorf("%s: presigned download: status %d, sha256 %s", src, resp.StatusCode, got)
		}
		t.Logf("%s: %d MiB data, %d MiB sent, %d of %d parts copied", filepath.Base(src), s.Stats.Data>>20, sent>>20, s.Target.PartsCopied, s.Target.Parts)
		checkRSS(t, r, 8, s.Target.PartSize)
	}
	e.nothingLeft("img/disk.qcow2.raw", "img/disk.raw.raw", "img/disk.vmdk.raw")
}

// QCOW2 output: the encoder appends clusters, then tables, and hands the
// header to Commit; part 1 goes up last with it. The object must equal the
// local conversion to a file, byte for byte.
func TestUploadQCOW2Output(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 96*mib, []run{{mib, 20 * mib}, {40*mib + 12*kib, 4 * kib}, {60 * mib, 10 * mib}, {95 * mib, mib}})
	local := filepath.Join(dir, "local.qcow2")
	if r := e.run(disk, "-O", "qcow2", "-o", local); r.code != 0 {
		t.Fatalf("convert to a file: exit %d: %s", r.code, r.stderr)
	}
	f, err := os.Open(local)
	if err != nil {
		t.Fatal(err)
	}
	want := hashReader(t, f)
	f.Close()
	// --compress=never: byte for byte as the file (auto's choices follow
	// the link; TestKillThenResumeCompressAuto covers them).
	r, s := e.mustRun(disk, "-O", "qcow2", "-o", "s3://"+e.bucket+"/disk.qcow2", "--verify", "--compress=never")
	if got := e.objectSHA("disk.qcow2"); got != want {
		t.Fatalf("object sha256 %s, local conversion %s", got, want)
	}
	resp, err := http.Get(s.Target.PresignedURL)
	if err != nil {
		t.Fatal(err)
	}
	got := hashReader(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || got != want {
		t.Errorf("presigned download: status %d, sha256 %s", resp.StatusCode, got)
	}
	if !strings.Contains(r.stdout, `"diskFormat": "qcow2"`) {
		t.Errorf("the ImportImage body does not say qcow2:\n%s", r.stdout)
	}
	checkRSS(t, r, 8, s.Target.PartSize)
	e.nothingLeft("disk.qcow2")
}

// A sparse disk: whole zero parts are copied server-side, so little more
// than the data crosses the wire. (The 20 GiB virtual / 1 GiB data
// case, scaled down to 1 GiB / ~300 MiB for the test budget: sending the
// zeros would cost 3.4x the data; the fixed costs, the zero object's
// 8 MiB seed and the parts where data and zeros meet, weigh more than at
// 1 GiB of data.)
func TestSparseUploadSendsLittleMoreThanData(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 1024*mib, []run{{mib, 120 * mib}, {200*mib + 8*kib, 4 * kib}, {300*mib + 123*kib, 130 * mib}, {700 * mib, 50 * mib}, {1023 * mib, mib}})
	want := testkit.RawSHA256(t, disk)
	r, s := e.mustRun(disk, "-O", "raw", "-o", "s3://"+e.bucket+"/sparse.raw")
	if got := e.objectSHA("sparse.raw"); got != want {
		t.Fatal("object differs from qemu-img's conversion")
	}
	sent := e.proxy.Sent.Load()
	t.Logf("virtual 1024 MiB, data %d MiB, sent %d MiB (%.2fx data), %d of %d parts copied", s.Stats.Data>>20, sent>>20, float64(sent)/float64(s.Stats.Data), s.Target.PartsCopied, s.Target.Parts)
	if float64(sent) > 1.2*float64(s.Stats.Data) {
		t.Errorf("%d bytes on the wire for %d bytes of data: more than 1.2x", sent, s.Stats.Data)
	}
	checkRSS(t, r, 8, s.Target.PartSize)
	e.nothingLeft("sparse.raw")
}

func TestKillThenResume(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 192*mib, []run{{mib, 100 * mib}, {130*mib + 5*kib, 30 * mib}})
	want := testkit.RawSHA256(t, disk)
	dest := "s3://" + e.bucket + "/resumed.raw"
	state := filepath.Join(dir, "upload.state")
	e.slowParts(400 * time.Millisecond)
	if e.killAfterParts(3, disk, "-O", "raw", "-o", dest, "--state-file", state, "--upload-concurrency", "2") < 3 {
		t.Fatal("the upload did not get going")
	}
	if p := srv.Pending(t, e.bucket); len(p) != 1 {
		t.Fatalf("after kill -9: incomplete uploads %v, want 1", p)
	}
	e.proxy.Inject(0, nil)

	// Without --resume the recorded upload is not silently dropped.
	r := e.run(disk, "-O", "raw", "-o", dest, "--state-file", state)
	if r.code != 1 || !strings.Contains(r.stderr, "--resume") {
		t.Errorf("re-run without --resume: exit %d: %s", r.code, r.stderr)
	}
	r, s := e.mustRun(disk, "-O", "raw", "-o", dest, "--state-file", state, "--resume", "--verify")
	if s.Target.PartsReused < 3 {
		t.Errorf("resumed run reused %d parts, want >= 3\n%s", s.Target.PartsReused, r.stderr)
	}
	if got := e.objectSHA("resumed.raw"); got != want {
		t.Fatal("resumed object differs from qemu-img's conversion")
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file left after success: %v", err)
	}
	e.nothingLeft("resumed.raw")
}

func TestFailedRunLeavesNothing(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 128*mib, []run{{mib, 40 * mib}})
	dest := "s3://" + e.bucket + "/failed.raw"

	// A fatal error from the store: exit 1, upload aborted.
	e.proxy.Inject(300*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" && n >= 2 {
			return s3test.Deny403
		}
		return s3test.Pass
	})
	r := e.run(disk, "-O", "raw", "-o", dest)
	if r.code != 1 || !strings.Contains(r.stderr, "AccessDenied") {
		t.Errorf("denied part: exit %d: %s", r.code, r.stderr)
	}
	e.nothingLeft()

	// SIGINT in the middle: exit 130, upload aborted.
	e.slowParts(300 * time.Millisecond)
	before := e.proxy.Done("UploadPart")
	cmd := e.command(disk, "-O", "raw", "-o", dest)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for e.proxy.Done("UploadPart") < before+2 {
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("SIGINT: exit %d: %s", code, errb.String())
	}
	e.nothingLeft()

	// A bucket that does not exist: one clear line (after the import
	// check's findings, which convert prints first).
	r = e.run(disk, "-O", "raw", "-o", "s3://no-such-bucket-here/x.raw")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if last := lines[len(lines)-1]; r.code != 1 || !strings.Contains(last, `bucket "no-such-bucket-here" does not exist`) {
		t.Errorf("missing bucket: exit %d: %q", r.code, r.stderr)
	}
}

func TestUploadsLsAbort(t *testing.T) {
	e := newEnv(t)
	c := srv.Client()
	cr, err := c.CreateMultipartUpload(context.Background(), &s3.CreateMultipartUploadInput{Bucket: aws.String(e.bucket), Key: aws.String("dir/left.raw")})
	if err != nil {
		t.Fatal(err)
	}
	r := e.run("uploads", "ls", "s3://"+e.bucket+"/dir/")
	if r.code != 0 || !strings.Contains(r.stdout, aws.ToString(cr.UploadId)) {
		t.Fatalf("uploads ls: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	// A failed run with --resume keeps its upload and its state file (at
	// the default place) for the next run.
	disk := makeDisk(t, t.TempDir(), 24*mib, []run{{mib, 16 * mib}})
	e.proxy.Inject(0, func(op string, n int) s3test.Fault {
		if op == "UploadPart" && n >= 2 {
			return s3test.Deny403
		}
		return s3test.Pass
	})
	if r := e.run(disk, "-o", "s3://"+e.bucket+"/dir/kept.raw", "--resume", "--part-size", "5M"); r.code != 1 {
		t.Fatalf("denied part with --resume: exit %d: %s", r.code, r.stderr)
	}
	e.proxy.Inject(0, nil)
	states := func() []string {
		m, _ := filepath.Glob(filepath.Join(e.home, ".cache", "vmimport", "uploads", "*.json"))
		return m
	}
	if len(states()) != 1 || len(srv.Pending(t, e.bucket)) != 2 {
		t.Fatalf("the failed run kept state files %v and uploads %v, want one of each (and the other upload)", states(), srv.Pending(t, e.bucket))
	}
	r = e.run("uploads", "abort", "s3://"+e.bucket+"/dir/", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "aborted") || !strings.Contains(r.stdout, "removed its resume state") {
		t.Fatalf("uploads abort: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	// Aborting the upload forgets its state: a --resume finds nothing.
	if s := states(); len(s) != 0 {
		t.Errorf("uploads abort left the state files %v", s)
	}
	e.nothingLeft()
}

// TestKillThenResumeCompressAuto: an upload at its defaults (QCOW2,
// --compress auto) over a slow link compresses; killed with -9 and
// resumed over a fast link (where auto alone would store plain), it replays
// the recorded decisions, so the parts already there are the parts it makes
// again, and the object converts to the source's bytes.
func TestKillThenResumeCompressAuto(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 160*mib, nil)
	// Data that deflates about 2:1, as file systems hold: random bytes of
	// a 16-letter alphabet.
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, mib)
	for off := 2 * mib; off < 150*mib; off += mib {
		rand.Read(buf)
		for i := range buf {
			buf[i] = 'a' + buf[i]&15
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	want := testkit.RawSHA256(t, disk)
	dest := "s3://" + e.bucket + "/auto.qcow2"
	state := filepath.Join(dir, "upload.state")
	e.slowParts(300 * time.Millisecond)
	before := e.killAfterParts(4, disk, "-o", dest, "--state-file", state, "--upload-concurrency", "2", "--part-size", "5M")
	if before < 4 {
		t.Fatal("the upload did not get going")
	}
	e.proxy.Inject(0, nil)
	r := e.run(disk, "-o", dest, "--state-file", state, "--upload-concurrency", "2", "--part-size", "5M", "--resume", "--verify", "--json")
	if r.code != 0 {
		t.Fatalf("resume: exit %d\n%s", r.code, r.stderr)
	}
	var s struct {
		OutputFormat string `json:"output_format"`
		Compression  struct {
			Mode       string `json:"mode"`
			Compressed int64  `json:"compressed_clusters"`
			Replayed   int64  `json:"replayed_bytes"`
		} `json:"compression"`
		Target struct {
			Parts       int `json:"parts"`
			PartsReused int `json:"parts_reused"`
		} `json:"target"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	t.Logf("%d parts sent before the kill; resumed: %+v", before, s)
	if s.OutputFormat != "qcow2" || s.Compression.Mode != "auto" || s.Compression.Compressed == 0 || s.Compression.Replayed == 0 {
		t.Errorf("resumed run: %+v, want QCOW2 with clusters compressed by replayed decisions", s)
	}
	// Part 1 is sent last; every part stored before the kill is made
	// again byte for byte.
	if s.Target.PartsReused < before-1 {
		t.Errorf("resumed run reused %d parts of the %d sent before the kill\n%s", s.Target.PartsReused, before, r.stderr)
	}
	out := filepath.Join(dir, "got.qcow2")
	o, err := srv.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("auto.qcow2")})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := os.Create(out)
	io.Copy(g, o.Body)
	o.Body.Close()
	g.Close()
	testkit.QemuImg(t, "check", out)
	if testkit.RawSHA256(t, out) != want {
		t.Fatal("resumed object differs from the source")
	}
	e.nothingLeft("auto.qcow2")
}

// TestLargePartsBoundedMemory: with the 64 MiB parts of a 500 GiB disk
// and default settings, fewer parts go at a time and part 1 is small: one
// upload peaks under 256 MiB (it took 668 MiB with 8 parts in flight).
func TestLargePartsBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 300 MiB")
	}
	e := newEnv(t)
	e.bin = s3test.PlainConvert(t) // RSS as users meet it, without the race detector's
	disk := makeDisk(t, t.TempDir(), 320*mib, []run{{mib, 300 * mib}})
	r, s := e.mustRun(disk, "-o", "s3://"+e.bucket+"/big.qcow2", "--part-size", "64M", "--compress=never")
	t.Logf("peak RSS %d MiB, %d parts of %d MiB", r.maxRSS>>20, s.Target.Parts, s.Target.PartSize>>20)
	if s.Target.Parts < 5 || s.Target.PartSize != 64*mib {
		t.Fatalf("parts: %+v", s.Target)
	}
	if r.maxRSS > 256*mib {
		t.Errorf("peak RSS %d MiB, want under 256 MiB", r.maxRSS>>20)
	}
	if srv.GuestSHA256(t, e.bucket, "big.qcow2", "qcow2") != testkit.RawSHA256(t, disk) {
		t.Error("the object differs from the source")
	}
}
