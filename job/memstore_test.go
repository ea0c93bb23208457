package job

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"vmimport/internal/objstore"
	"vmimport/upload"
)

// memClients are store clients whose every call goes to m: the job's
// uploads run in process, under -race, without a server.
func memClients(m *objstore.Memory) *Clients {
	return upload.NewClients(upload.Config{
		Backend:     m.Bucket,
		Credentials: credentials.NewStaticCredentialsProvider("test-key", "test-secret", ""),
		MaxBackoff:  50 * time.Millisecond, MaxPacing: 100 * time.Millisecond,
	})
}

// randomRaw writes a RAW disk of size bytes, random data in its first half.
func randomRaw(t *testing.T, size int64) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b[:size/2])
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func memSpec(src, key string) Spec {
	return Spec{
		Source: src, Output: "s3://mem-bucket/" + key, Format: "raw", Check: "off", Workers: 3,
		Upload: UploadSpec{Store: Store{Endpoint: "http://127.0.0.1:9", Region: "us-east-1"}, PartSize: 5 << 20, Verify: true,
			StateFile: filepath.Join(os.TempDir(), "unused")},
	}
}

// TestUploadInProcess: a job uploads into the memory store, every step
// reported (Options.Steps through the job's phases), the object the
// source's bytes, verified, nothing left over.
func TestUploadInProcess(t *testing.T) {
	m := &objstore.Memory{}
	m.Bucket("mem-bucket")
	src, want := randomRaw(t, 23<<20)
	spec := memSpec(src, "disk.raw")
	spec.Upload.StateFile = filepath.Join(t.TempDir(), "state.json")
	var ev events
	res, err := Run(context.Background(), spec, Env{Clients: memClients(m), Events: ev.add})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Object("mem-bucket", "disk.raw"); !bytes.Equal(got, want) {
		t.Fatalf("the object differs from the source (%d bytes, want %d)", len(got), len(want))
	}
	if res.Upload == nil || !res.Upload.Verified || m.Uploads("mem-bucket") != 0 || len(m.Keys("mem-bucket")) != 1 {
		t.Fatalf("report %+v; %d uploads, keys %v", res.Upload, m.Uploads("mem-bucket"), m.Keys("mem-bucket"))
	}
	phases := strings.Join(phaseNames(ev.phases()), ",")
	for _, p := range []Phase{Preflight, Reading, UploadingParts, Completing, CheckingObject, VerifyingObject} {
		if !strings.Contains(phases, string(p)) {
			t.Errorf("phase %q not reported: %s", p, phases)
		}
	}
}

func phaseNames(ps []Phase) []string {
	var s []string
	for _, p := range ps {
		s = append(s, string(p))
	}
	return s
}

// TestUploadStormPacedAndTold: the store answers 503 SlowDown to the
// first parts: they are tried again, paced, counted in the result and
// told as notices; the upload completes.
func TestUploadStormPacedAndTold(t *testing.T) {
	var refused atomic.Int64
	m := &objstore.Memory{Fault: func(op, key string, n int) error {
		if op == "UploadPart" && n <= 6 {
			refused.Add(1)
			return objstore.Injected(op, 503, "SlowDown")
		}
		return nil
	}}
	m.Bucket("mem-bucket")
	src, want := randomRaw(t, 23<<20)
	spec := memSpec(src, "disk.raw")
	spec.Upload.StateFile = filepath.Join(t.TempDir(), "state.json")
	var ev events
	res, err := Run(context.Background(), spec, Env{Clients: memClients(m), Events: ev.add})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Object("mem-bucket", "disk.raw"), want) {
		t.Fatal("the object differs from the source")
	}
	notices := strings.Join(ev.messages(Notice), "\n")
	if res.StoreRetries != refused.Load() || !strings.Contains(notices, "SlowDown") || !strings.Contains(notices, "paced") {
		t.Fatalf("%d retries counted for %d refusals; notices:\n%s", res.StoreRetries, refused.Load(), notices)
	}
}

// TestUploadCancelledMidRetry: a job cancelled while a part waits to be
// tried again ends cancelled (not failed with the store's last answer),
// and leaves no upload.
func TestUploadCancelledMidRetry(t *testing.T) {
	m := &objstore.Memory{Fault: func(op, key string, n int) error {
		if op == "UploadPart" {
			return objstore.Injected(op, 503, "SlowDown")
		}
		return nil
	}}
	m.Bucket("mem-bucket")
	src, _ := randomRaw(t, 23<<20)
	spec := memSpec(src, "disk.raw")
	spec.Upload.StateFile = filepath.Join(t.TempDir(), "state.json")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Run(ctx, spec, Env{Clients: memClients(m), Events: func(e Event) {
		if e.Kind == Notice && strings.Contains(e.Message, "SlowDown") {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled mid-retry: %v", err)
	}
	if n := m.Uploads("mem-bucket"); n != 0 || len(m.Keys("mem-bucket")) != 0 {
		t.Fatalf("left %d uploads and %v", n, m.Keys("mem-bucket"))
	}
}
