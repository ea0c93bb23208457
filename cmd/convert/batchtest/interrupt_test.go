package batchtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmimport/internal/s3test"
)

// TestBatchMemoryBudget: three disks at once with 8 workers each, uploads
// with 8 parts in flight, under --memory 256M: the process's peak RSS stays
// within the budget + 64 MiB.
func TestBatchMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("moves ~400 MiB through the S3 server")
	}
	e := newEnv(t)
	e.bin = s3test.PlainConvert(t) // RSS as users meet it, without the race detector's
	dir := t.TempDir()
	var lines []string
	for i := range 4 {
		src := randomDisk(t, filepath.Join(dir, fmt.Sprintf("d%d.raw", i)), 128*mib, 0, 3*mib, 4*mib)
		dest := "s3://" + e.bucket + fmt.Sprintf("/d%d.raw", i)
		if i == 3 {
			dest = filepath.Join(dir, "d3.out.qcow2")
			lines = append(lines, jsonLine("source", src, "output", dest, "output-format", "qcow2", "compress", true))
			continue
		}
		lines = append(lines, jsonLine("source", src, "output", dest))
	}
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), lines)
	r := e.run("batch", manifest, "--jobs", "3", "--workers", "8", "--upload-concurrency", "8", "--memory", "256M", "--json", "--no-state")
	_, sum := parse(t, r.stdout)
	if r.code != 0 || sum.Done != 4 {
		t.Fatalf("exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	t.Logf("peak RSS %d MiB with --memory 256M, 3 jobs x 8 workers", r.maxRSS>>20)
	if r.maxRSS > (256+64)<<20 {
		t.Errorf("peak RSS %d MiB, budget 256 MiB + 64", r.maxRSS>>20)
	}
}

// TestBatchInterrupt: SIGINT stops new disks and aborts the running ones:
// nothing under their output names, no upload left, exit 130, and every
// disk reported.
func TestBatchInterrupt(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	small := randomDisk(t, filepath.Join(dir, "small.raw"), 8*mib, 0, 256<<10, mib)
	big := randomDisk(t, filepath.Join(dir, "big.raw"), 64*mib, 0, 7*mib, 8*mib)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), []string{
		jsonLine("source", small, "output", filepath.Join(out, "small.raw")),
		jsonLine("source", big, "output", "s3://"+e.bucket+"/big.raw"),
		jsonLine("source", small, "output", filepath.Join(out, "later.raw")),
	})
	e.proxy.Inject(300*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.SlowOnReply
		}
		return s3test.Pass
	})
	cmd := e.command("batch", manifest, "--jobs", "1", "--json", "--no-state", "--upload-concurrency", "2")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for e.proxy.Done("UploadPart") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d, want 130\n%s", code, stderr.String())
	}
	got, sum := parse(t, stdout.String())
	if sum.Done != 1 || sum.Cancelled != 2 || got["s3://"+e.bucket+"/big.raw"].Status != "cancelled" || got[filepath.Join(out, "later.raw")].Status != "cancelled" {
		t.Errorf("outcomes %+v, %+v", got, sum)
	}
	if p := srv.Pending(t, e.bucket); len(p) != 0 {
		t.Errorf("incomplete uploads left: %v", p)
	}
	if keys := srv.Keys(t, e.bucket); len(keys) != 0 {
		t.Errorf("objects left: %v", keys)
	}
	if _, err := os.Stat(filepath.Join(out, "later.raw")); !os.IsNotExist(err) {
		t.Error("a disk after the interrupt was converted")
	}
}

// TestBatchLargePartsMemory: four uploads in 64 MiB parts, one of which
// the store refuses (403 on its parts), three at a time under --memory
// 512M: the peak RSS stays within the budget + 64 MiB, with no help from
// debug.FreeOSMemory (the buffers of a finished disk go back to the pool
// and are lent to the next; batch's TestBatchGivesBuffersBack follows
// them).
func TestBatchLargePartsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves ~320 MiB through the S3 server")
	}
	e := newEnv(t)
	e.bin = s3test.PlainConvert(t)
	e.proxy.InjectKey(0, func(op, path string, n int) s3test.Fault {
		if op == "UploadPart" && strings.HasSuffix(path, "/d2.raw") {
			return s3test.Deny403
		}
		return s3test.Pass
	})
	dir := t.TempDir()
	var lines []string
	for i := range 4 {
		src := randomDisk(t, filepath.Join(dir, fmt.Sprintf("d%d.raw", i)), 80*mib, 0, 4<<10, mib)
		lines = append(lines, jsonLine("source", src, "output", "s3://"+e.bucket+fmt.Sprintf("/d%d.raw", i), "output-format", "raw"))
	}
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), lines)
	r := e.run("batch", manifest, "--jobs", "3", "--workers", "2", "--part-size", "64M", "--memory", "512M", "--json", "--no-state")
	got, sum := parse(t, r.stdout)
	if r.code != 1 || sum.Done != 3 || sum.Failed != 1 || got["s3://"+e.bucket+"/d2.raw"].Status != "failed" {
		t.Fatalf("exit %d, %+v\n%s", r.code, sum, r.stderr)
	}
	t.Logf("peak RSS %d MiB with --memory 512M, parts of 64 MiB", r.maxRSS>>20)
	if r.maxRSS > (512+64)<<20 {
		t.Errorf("peak RSS %d MiB, budget 512 MiB + 64", r.maxRSS>>20)
	}
}
