package queue

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

	"vmimport/batch"
	"vmimport/internal/natstest"
	"vmimport/internal/objstore"
	"vmimport/job"
	"vmimport/upload"
)

// TestWorkInProcess: a worker in this process (under -race) takes two
// disks from a real nats-server and uploads them into the memory store:
// its deliveries, leases, heartbeats and fenced writes run alongside the
// uploads' senders.
func TestWorkInProcess(t *testing.T) {
	srv := natstest.Start(t)
	q := open(t, srv)
	m := &objstore.Memory{}
	m.Bucket("mem-bucket")
	clients := upload.NewClients(upload.Config{Backend: m.Bucket, Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""), MaxBackoff: 50 * time.Millisecond})
	defer clients.Close()
	dir := t.TempDir()
	var items []batch.Item
	want := map[string][]byte{}
	for i := range 2 {
		b := make([]byte, 12<<20)
		rand.Read(b[:6<<20])
		src := filepath.Join(dir, fmt.Sprintf("d%d.raw", i))
		if err := os.WriteFile(src, b, 0o644); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("d%d.raw", i)
		want[key] = b
		items = append(items, batch.Item{Line: i + 1, Spec: job.Spec{
			Source: src, Output: "s3://mem-bucket/" + key, Format: "raw", Check: "off", Workers: 2,
			Upload: job.UploadSpec{Store: job.Store{Endpoint: "http://127.0.0.1:9", Region: "us-east-1"}, PartSize: 5 << 20},
		}})
	}
	ctx := context.Background()
	if _, err := q.Submit(ctx, items); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	worked := make(chan error, 1)
	go func() {
		worked <- q.Work(wctx, WorkerOptions{Name: "w", Jobs: 2, Memory: 128 << 20, AckWait: 5 * time.Second, Clients: clients, Log: func(s string) { t.Log(s) },
			Limits: Limits{Sources: []string{dir}, Outputs: []string{"s3://mem-bucket/"}, Endpoints: []string{"http://127.0.0.1:9"}}})
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		all, err := q.Statuses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, s := range all {
			if s.State == Done {
				done++
			}
			if s.State == Failed {
				t.Fatalf("%s failed: %+v", s.Output, s.Outcome)
			}
		}
		if done == len(items) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the disks did not get done: %+v", all)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-worked; err != nil {
		t.Fatal(err)
	}
	for key, b := range want {
		if !bytes.Equal(m.Object("mem-bucket", key), b) {
			t.Errorf("%s differs from its source", key)
		}
	}
	if n := m.Uploads("mem-bucket"); n != 0 {
		t.Errorf("%d uploads left", n)
	}
}
