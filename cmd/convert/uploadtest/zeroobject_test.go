package uploadtest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

// TestKillAfterCompleteThenResume: kill -9 after the store completed the
// upload but before the cleanup leaves the object and its zero object;
// uploads ls shows the zero object, a re-run without --resume says what to
// do, and --resume checks the object and only cleans up, sending nothing.
func TestKillAfterCompleteThenResume(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	// Zero runs of several parts: the upload builds a zero object.
	disk := makeDisk(t, dir, 96*mib, []run{{mib, 20 * mib}, {70 * mib, 10 * mib}})
	want := testkit.RawSHA256(t, disk)
	dest := "s3://" + e.bucket + "/done.raw"
	state := filepath.Join(dir, "upload.state")
	e.proxy.Inject(4*time.Second, func(op string, n int) s3test.Fault {
		if op == "CompleteMultipartUpload" {
			return s3test.SlowOnReply // the store completes, the answer never comes in time
		}
		return s3test.Pass
	})
	cmd := e.command(disk, "-O", "raw", "-o", dest, "--state-file", state)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("done.raw")}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the upload never completed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	e.proxy.Inject(0, nil)
	keys := srv.Keys(t, e.bucket)
	var zero string
	for _, k := range keys {
		if strings.Contains(k, ".convert-zeros-") {
			zero = k
		}
	}
	if zero == "" {
		t.Fatalf("after kill -9 past Complete the bucket holds %v: want the object and its zero object", keys)
	}
	r := e.run("uploads", "ls", "s3://"+e.bucket+"/")
	if r.code != 0 || !strings.Contains(r.stdout, zero) || !strings.Contains(r.stdout, "zero object") {
		t.Errorf("uploads ls does not show the zero object %s: exit %d\n%s%s", zero, r.code, r.stdout, r.stderr)
	}
	r = e.run(disk, "-O", "raw", "-o", dest, "--state-file", state)
	if r.code != 1 || !strings.Contains(r.stderr, "--resume to finish it") {
		t.Errorf("re-run without --resume: exit %d: %s", r.code, r.stderr)
	}
	sentBefore := e.proxy.Sent.Load()
	r, s := e.mustRun(disk, "-O", "raw", "-o", dest, "--state-file", state, "--resume")
	if sent := e.proxy.Sent.Load() - sentBefore; sent != 0 || s.Target.PartsReused != s.Target.Parts || s.Target.Parts == 0 {
		t.Errorf("resume of a completed upload sent %d bytes, reused %d of %d parts\n%s", sent, s.Target.PartsReused, s.Target.Parts, r.stderr)
	}
	if got := e.objectSHA("done.raw"); got != want {
		t.Fatal("the object differs from qemu-img's conversion")
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file left after the resume: %v", err)
	}
	e.nothingLeft("done.raw")
}

// TestUploadsAbortZeroObjects: uploads abort deletes leftover zero objects
// and nothing else.
func TestUploadsAbortZeroObjects(t *testing.T) {
	e := newEnv(t)
	c := srv.Client()
	for _, k := range []string{"img/a.raw", "img/a.raw.convert-zeros-0123456789ab", "img/b.qcow2.convert-zeros-ba9876543210.seed"} {
		if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(k), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	r := e.run("uploads", "ls", "--json", "s3://"+e.bucket+"/img/")
	var ls []struct{ Key, Kind string }
	if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil || len(ls) != 2 || ls[0].Kind != "zero-object" {
		t.Fatalf("uploads ls --json: %v %s %s", err, r.stdout, r.stderr)
	}
	r = e.run("uploads", "abort", "s3://"+e.bucket+"/img/", "--yes")
	if r.code != 0 || strings.Count(r.stdout, "deleted zero object") != 2 {
		t.Fatalf("uploads abort: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	e.nothingLeft("img/a.raw")
}
