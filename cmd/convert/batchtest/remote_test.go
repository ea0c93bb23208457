package batchtest

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
	"vmimport/internal/webtest"
)

// TestBatchRemoteSources: records read from a web server (with a header
// from the record) and from the bucket; a rerun skips them (their
// identity is URL, size and ETag, asked with one small request), and a
// source that changed on the server is done again.
func TestBatchRemoteSources(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	web := filepath.Join(dir, "web")
	os.Mkdir(web, 0o755)
	raw := randomDisk(t, filepath.Join(dir, "base.raw"), 16*mib, 256<<10, 300<<10, 2*mib)
	want := testkit.RawSHA256(t, raw)
	testkit.Convert(t, raw, filepath.Join(web, "web01.vmdk"), "vmdk", "-o", "subformat=streamOptimized")
	q := testkit.Convert(t, raw, filepath.Join(dir, "db01.qcow2"), "qcow2")
	b, _ := os.ReadFile(q)
	if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("exports/db01.qcow2"), Body: strings.NewReader(string(b))}); err != nil {
		t.Fatal(err)
	}
	ws := webtest.Start(t, web)
	ws.Set(func(s *webtest.Server) { s.Need = "Authorization: Bearer rec0rd" })
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	manifest := writeManifest(t, filepath.Join(dir, "disks.jsonl"), []string{
		jsonLine("source", ws.URL+"/web01.vmdk", "output", filepath.Join(out, "web01.raw"), "source-header", "Authorization: Bearer rec0rd"),
		jsonLine("source", "s3://"+e.bucket+"/exports/db01.qcow2", "output", filepath.Join(out, "db01.raw")),
	})
	state := filepath.Join(dir, "state")
	for i, wantDone := range []int{2, 0, 1} {
		if i == 2 {
			later := time.Now().Add(time.Hour)
			os.Chtimes(filepath.Join(web, "web01.vmdk"), later, later) // a new ETag
		}
		r := e.run("batch", manifest, "--json", "--state-dir", state)
		got, sum := parse(t, r.stdout)
		if r.code != 0 || sum.Done != wantDone || sum.Skipped != 2-wantDone {
			t.Fatalf("run %d: exit %d, %+v\n%s", i+1, r.code, sum, r.stderr)
		}
		for _, name := range []string{"web01.raw", "db01.raw"} {
			if fileSHA(t, filepath.Join(out, name)) != want {
				t.Errorf("run %d: %s differs from the disk", i+1, name)
			}
		}
		if i == 2 && got[filepath.Join(out, "web01.raw")].Status != "done" {
			t.Errorf("the changed source was not done again: %+v", got)
		}
		if strings.Contains(r.stdout+r.stderr, "rec0rd") {
			t.Error("the record's header shows in the output")
		}
	}
}
