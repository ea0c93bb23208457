//go:build unix

package queuetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

// TestQueuePausedWorker: a worker stopped (SIGSTOP) in the middle of an
// upload for longer than its lease (--ack-wait) loses the disk to another
// worker, which resumes the upload and finishes it. When the first one
// wakes (SIGCONT) it must write nothing shared: the object, the upload
// state, the batch bookkeeping and the status stay the new holder's (every
// key of the bucket at the revision it had), and nothing is left in the
// bucket.
func TestQueuePausedWorker(t *testing.T) {
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
	e.worker("a", "--ack-wait", "2s")
	wait := e.submit(manifest, "--wait", "--json", "--upload-concurrency", "2")
	e.waitFor(60*time.Second, "the upload to get going", func() bool { return e.proxy.Done("UploadPart") >= 4 })
	e.mu.Lock()
	a := e.workers["a"]
	e.mu.Unlock()
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	e.proxy.Inject(0, nil)
	e.worker("b", "--ack-wait", "2s")
	r := wait()
	got, _ := parse(t, r.stdout)
	if o := got[out]; r.code != 0 || o.Status != "done" || o.Target == nil || o.Target.PartsReused == 0 {
		a.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("b did not resume and finish the disk: exit %d, %+v\n%s", r.code, o, r.stderr)
	}
	object := e.objectRawSHA("big.raw", "")
	before := e.bucketEntries()
	if !hasKey(before, "status.") || !hasKey(before, "disk-") || hasKey(before, "upload-") {
		t.Fatalf("after b: the bucket holds %v; want a status and a bookkeeping record, no upload state", before)
	}

	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	e.waitFor(60*time.Second, "worker a to find the disk gone", func() bool {
		b, _ := os.ReadFile(a.log)
		return strings.Contains(string(b), "the disk is another worker's now")
	})
	after := e.bucketEntries()
	for k, rev := range before {
		if after[k] != rev {
			t.Errorf("key %s: revision %d after a woke, %d before", k, after[k], rev)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("key %s appeared after a woke", k)
		}
	}
	if e.objectRawSHA("big.raw", "") != object || object != testkit.RawSHA256(t, big) {
		t.Error("the object changed, or differs from the source")
	}
	st, _ := e.statuses()
	if s := st[out]; s.State != "done" || s.Worker != "b" {
		t.Errorf("status %+v, want done by b", s)
	}
	e.noLeftovers(1)
}

// bucketEntries is the revision of every key of the queue's bucket, but
// the clock keys workers stamp to read the server's time.
func (e *env) bucketEntries() map[string]uint64 {
	e.t.Helper()
	nc, err := nats.Connect(e.nats.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "convert")
	if err != nil {
		e.t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	revs := map[string]uint64{}
	for k := range keys.Keys() {
		if strings.HasPrefix(k, "clock.") {
			continue
		}
		en, err := kv.Get(ctx, k)
		if err != nil {
			e.t.Fatalf("%s: %v", k, err)
		}
		revs[k] = en.Revision()
	}
	return revs
}

func hasKey(m map[string]uint64, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}
