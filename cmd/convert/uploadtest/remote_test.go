package uploadtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/testkit"
)

// put stores a file under key.
func put(t *testing.T, bucket, key, file string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: f}); err != nil {
		t.Fatal(err)
	}
}

// TestRemoteSourceResume converts an image read in place from the bucket
// (its store taken from --endpoint) into an upload to the same store,
// kills the run, and resumes it: the remote source's identity (URL, size,
// ETag) is the one recorded, so the parts are reused; once the source
// object is replaced, the resume is refused.
func TestRemoteSourceResume(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 96*mib, []run{{mib, 60 * mib}, {90 * mib, 2 * mib}})
	want := testkit.RawSHA256(t, disk)
	qcow := testkit.Convert(t, disk, filepath.Join(dir, "web01.qcow2"), "qcow2")
	put(t, e.bucket, "exports/web01.qcow2", qcow)
	src := "s3://" + e.bucket + "/exports/web01.qcow2"
	dest := "s3://" + e.bucket + "/images/"
	state := filepath.Join(dir, "upload.state")
	e.slowParts(400 * time.Millisecond)
	n := e.killAfterParts(2, src, "-O", "raw", "-o", dest, "--state-file", state, "--upload-concurrency", "2", "--part-size", "8M")
	e.proxy.Inject(0, nil)
	if n < 2 {
		t.Fatal("the upload did not get going")
	}
	r, s := e.mustRun(src, "-O", "raw", "-o", dest, "--state-file", state, "--resume", "--part-size", "8M")
	if s.Target.PartsReused < 2 {
		t.Errorf("resumed run reused %d parts, want >= 2\n%s", s.Target.PartsReused, r.stderr)
	}
	if got := e.objectSHA("images/web01.raw"); got != want {
		t.Fatal("object differs from qemu-img's conversion")
	}

	// Killed again, then the source changes: the resume is refused.
	e.slowParts(400 * time.Millisecond)
	before := e.proxy.Done("UploadPart")
	e.killAfterParts(before+2, src, "-O", "raw", "-o", "s3://"+e.bucket+"/images/again.raw", "--state-file", state, "--upload-concurrency", "2", "--part-size", "8M")
	e.proxy.Inject(0, nil)
	put(t, e.bucket, "exports/web01.qcow2", disk) // another object under the key
	r = e.run(src, "-O", "raw", "-o", "s3://"+e.bucket+"/images/again.raw", "--state-file", state, "--resume", "--part-size", "8M")
	if r.code == 0 || !strings.Contains(r.stderr, "exports/web01.qcow2 changed") {
		t.Errorf("resume after the source changed: exit %d\n%s", r.code, r.stderr)
	}
	e.run("uploads", "abort", "s3://"+e.bucket+"/images/", "--yes")
}
