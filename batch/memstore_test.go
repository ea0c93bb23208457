package batch

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"vmimport/internal/kv"
	"vmimport/internal/objstore"
	"vmimport/job"
	"vmimport/upload"
)

// TestBatchInProcess: a batch of uploads into the memory store, under
// -race: every object right, and a rerun skips them all (the skip-done
// check asks the store through the same interface).
func TestBatchInProcess(t *testing.T) {
	m := &objstore.Memory{}
	m.Bucket("mem-bucket")
	clients := upload.NewClients(upload.Config{Backend: m.Bucket, Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""), MaxBackoff: 50 * time.Millisecond})
	defer clients.Close()
	dir := t.TempDir()
	var items []Item
	want := map[string][]byte{}
	for i := range 3 {
		b := make([]byte, (9+i)<<20)
		rand.Read(b[:4<<20])
		src := filepath.Join(dir, fmt.Sprintf("d%d.raw", i))
		if err := os.WriteFile(src, b, 0o644); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("d%d.raw", i)
		want[key] = b
		items = append(items, Item{Line: i + 1, Spec: job.Spec{
			Source: src, Output: "s3://mem-bucket/" + key, Format: "raw", Check: "off", Workers: 2,
			Upload: job.UploadSpec{Store: job.Store{Endpoint: "http://127.0.0.1:9", Region: "us-east-1"}, PartSize: 5 << 20},
		}})
	}
	o := Options{Jobs: 2, Memory: 128 << 20, State: kv.Dir(filepath.Join(dir, "state")), UploadState: kv.Dir(filepath.Join(dir, "uploads")), Clients: clients}
	_, sum, err := Run(context.Background(), items, o)
	if err != nil || sum.Done != 3 {
		t.Fatalf("%v, %+v", err, sum)
	}
	for key, b := range want {
		if !bytes.Equal(m.Object("mem-bucket", key), b) {
			t.Errorf("%s differs from its source", key)
		}
	}
	_, sum, err = Run(context.Background(), items, o)
	if err != nil || sum.Skipped != 3 {
		t.Fatalf("rerun: %v, %+v", err, sum)
	}
}
