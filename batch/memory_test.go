package batch

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"weak"

	"vmimport/internal/s3test"
	"vmimport/job"
)

var srv *s3test.Server

func TestMain(m *testing.M) { os.Exit(s3test.Main(m, &srv)) }

// sparseDisk writes a RAW disk of size bytes with 4 KiB of random data in
// every MiB: every block of the pass, and every part, holds data.
func sparseDisk(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	for off := int64(0); off < size; off += 1 << 20 {
		rand.Read(b)
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestBatchGivesBuffersBack: a batch of four uploads in 64 MiB parts, one
// of which the store refuses (403 on its parts), under a budget of
// 512 MiB. Every buffer the pass and the parts borrowed goes back to the
// budget's pool, which never lent more than the budget; once the pool lets
// its buffers go, nothing else holds one (followed with weak pointers):
// not the outcomes, not the failed disk's error, not the store's
// connections.
func TestBatchGivesBuffersBack(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 320 MiB")
	}
	s3test.Need(t, srv)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	bucket := srv.Bucket(t)
	proxy := s3test.NewProxy(srv)
	defer proxy.Close()
	proxy.InjectKey(0, func(op, path string, n int) s3test.Fault {
		if op == "UploadPart" && strings.HasSuffix(path, "/d2.raw") {
			return s3test.Deny403
		}
		return s3test.Pass
	})
	dir := t.TempDir()
	var items []Item
	for i := range 4 {
		src := sparseDisk(t, filepath.Join(dir, fmt.Sprintf("d%d.raw", i)), 80<<20)
		items = append(items, Item{Line: i + 1, Spec: job.Spec{
			Source: src, Output: fmt.Sprintf("s3://%s/d%d.raw", bucket, i), Format: "raw", Check: "off", Workers: 2,
			Upload: job.UploadSpec{Store: job.Store{Endpoint: proxy.URL, Region: srv.Region}, PartSize: 64 << 20},
		}})
	}
	const memory = 512 << 20
	budget := job.NewBudget(memory)
	pool := budget.Buffers()
	var mu sync.Mutex
	var made []weak.Pointer[byte]
	var madeBytes int64
	pool.OnNew = func(b []byte) {
		mu.Lock()
		made = append(made, weak.Make(&b[0]))
		madeBytes += int64(len(b))
		mu.Unlock()
	}
	outs, sum, err := Run(context.Background(), items, Options{Jobs: 3, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Done != 3 || sum.Failed != 1 || outs[2].Status != Failed || !strings.Contains(outs[2].Error, "AccessDenied") {
		t.Fatalf("summary %+v; the refused disk: %s %q", sum, outs[2].Status, outs[2].Error)
	}
	for u := outs[2].Err; u != nil; u = unwrap(u) {
		if name := fmt.Sprintf("%T", u); strings.Contains(name, "smithy") || strings.Contains(name, "aws") || strings.Contains(name, "http.") {
			t.Errorf("the failed disk's error holds a %s", name)
		}
	}
	st := pool.Stats()
	t.Logf("pool: peak %d MiB lent, %d MiB made in %d buffers, %d MiB kept", st.Peak>>20, madeBytes>>20, len(made), st.Kept>>20)
	if st.Lent != 0 {
		t.Errorf("%d bytes still lent after the batch", st.Lent)
	}
	if st.Peak > memory || st.Peak < 64<<20 {
		t.Errorf("the pool lent %d MiB at most; want parts of 64 MiB, within the budget of %d MiB", st.Peak>>20, memory>>20)
	}
	pool.Flush()
	runtime.GC()
	runtime.GC()
	mu.Lock()
	defer mu.Unlock()
	held := 0
	for _, w := range made {
		if w.Value() != nil {
			held++
		}
	}
	if held > 0 {
		t.Errorf("%d of %d buffers are still reachable after the batch, with the outcomes kept", held, len(made))
	}
	runtime.KeepAlive(outs)
}

// unwrap follows an error's chain, the first of a joined one.
func unwrap(err error) error {
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return u.Unwrap()
	case interface{ Unwrap() []error }:
		if es := u.Unwrap(); len(es) > 0 {
			return es[0]
		}
	}
	return nil
}
