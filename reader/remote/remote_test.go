package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"vmimport/internal/webtest"
)

// fast are options for tests: small chunks, quick retries.
func fast() Options {
	return Options{ChunkSize: 64 << 10, CacheChunks: 8, PageSize: 16 << 10, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, IdleTimeout: 2 * time.Second}
}

func writeRandom(t testing.TB, dir, name string, n int, seed uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll reads [0, size) through r with reads of assorted sizes at
// assorted offsets, from several goroutines, and compares with want.
func readAll(t *testing.T, r io.ReaderAt, want []byte, seed uint64) {
	t.Helper()
	var g errgroup.Group
	for w := range 4 {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range 60 {
				off := rng.Int64N(int64(len(want)))
				n := []int{1, 512, 4096, 70 << 10, 200 << 10}[rng.IntN(5)]
				p := make([]byte, n)
				k, err := r.ReadAt(p, off)
				end := min(int(off)+n, len(want))
				if k != end-int(off) || (err != nil && !(err == io.EOF && end < int(off)+n)) {
					return errors.New("short read: " + err.Error())
				}
				if !bytes.Equal(p[:k], want[off:end]) {
					return errors.New("wrong bytes")
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPRead(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "disk.img", 3<<20+12345, 1)
	srv := webtest.Start(t, dir)
	op := New(context.Background(), fast())
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if src.Size != int64(len(want)) || src.Fd != -1 || !src.Remote || src.Path != srv.URL+"/disk.img" {
		t.Fatalf("source %+v", src)
	}
	readAll(t, src.R, want, 1)
	st := op.Stats()
	srv.Settle(st.Bytes)
	if st.Hits == 0 || st.Misses == 0 || st.Retries != 0 || st.Bytes != srv.Served.Load() {
		t.Errorf("stats %+v, served %d", st, srv.Served.Load())
	}
	id, _ := IdentityOf(src.R)
	if id.URL != srv.URL+"/disk.img" || id.Size != int64(len(want)) || id.ETag == "" || id.LastModified.IsZero() {
		t.Errorf("identity %+v", id)
	}
}

// TestSequentialOnce: a sequential pass of large reads fetches each byte
// once, whatever the small reads around it fetched.
func TestSequentialOnce(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "disk.img", 4<<20, 2)
	srv := webtest.Start(t, dir)
	op := New(context.Background(), fast())
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	small := make([]byte, 100)
	if _, err := src.R.ReadAt(small, 1<<20+10); err != nil { // a metadata read
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	var g errgroup.Group
	g.SetLimit(4)
	for off := 0; off < len(want); off += 128 << 10 {
		g.Go(func() error {
			_, err := src.R.ReadAt(got[off:off+128<<10], int64(off))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("wrong bytes")
	}
	if served := srv.Settle(int64(len(want))); served != int64(len(want)) {
		t.Errorf("served %d bytes for a file of %d", served, len(want))
	}
}

func TestHTTPFaults(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "disk.img", 2<<20, 3)
	srv := webtest.Start(t, dir)
	srv.Set(func(s *webtest.Server) { s.CutEvery, s.FailEvery = 3, 4 })
	o := fast()
	o.Retries = 20 // half the attempts fail: 6 in a row are likely somewhere
	op := New(context.Background(), o)
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readAll(t, src.R, want, 3)
	got := make([]byte, len(want))
	if _, err := src.R.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("whole read: %v", err)
	}
	if st := op.Stats(); st.Retries == 0 {
		t.Errorf("no retries counted: %+v", st)
	}
}

func TestHTTPStall(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "disk.img", 1<<20, 4)
	srv := webtest.Start(t, dir)
	o := fast()
	o.IdleTimeout = 100 * time.Millisecond
	op := New(context.Background(), o)
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Set(func(s *webtest.Server) { s.StallEvery, s.Stall = 1, time.Second })
	got := make([]byte, 256<<10)
	done := make(chan error, 1)
	go func() {
		_, err := src.R.ReadAt(got, 512<<10)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	srv.Set(func(s *webtest.Server) { s.StallEvery = 0 })
	select {
	case err := <-done:
		if err != nil || !bytes.Equal(got, want[512<<10:768<<10]) {
			t.Fatalf("read after a stall: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled response was never dropped")
	}
}

func TestHTTPRetriesBounded(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "disk.img", 1<<20, 5)
	srv := webtest.Start(t, dir)
	o := fast()
	o.Retries = 3
	op := New(context.Background(), o)
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Set(func(s *webtest.Server) { s.FailEvery = 1 })
	srv.Reset()
	_, err = src.R.ReadAt(make([]byte, 100), 200<<10)
	var e *Error
	if !errors.As(err, &e) || e.Status != 503 || e.Attempts != 4 || !errors.Is(err, ErrStatus) {
		t.Fatalf("error %v", err)
	}
	if n := srv.Requests.Load(); n != 4 {
		t.Errorf("%d requests, want 4 (1 + 3 retries)", n)
	}
	if !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), "(4 attempts)") {
		t.Errorf("message %q", err)
	}
}

// TestChanged: a file that changes while it is read fails with ErrChanged,
// whether the server pins it by ETag or by Last-Modified alone.
func TestChanged(t *testing.T) {
	for _, noETag := range []bool{false, true} {
		dir := t.TempDir()
		writeRandom(t, dir, "disk.img", 1<<20, 6)
		srv := webtest.Start(t, dir)
		srv.Set(func(s *webtest.Server) { s.NoETag = noETag })
		op := New(context.Background(), fast())
		src, c, err := op.OpenRemote(srv.URL + "/disk.img")
		if err != nil {
			t.Fatal(err)
		}
		// Same size, other bytes, a later time.
		writeRandom(t, dir, "disk.img", 1<<20, 7)
		later := time.Now().Add(time.Hour)
		os.Chtimes(filepath.Join(dir, "disk.img"), later, later)
		_, err = src.R.ReadAt(make([]byte, 100), 300<<10)
		if !errors.Is(err, ErrChanged) {
			t.Errorf("noETag=%v: read after a change: %v", noETag, err)
		}
		// A size change is seen even without validators.
		c.Close()
	}
}

func TestNoRanges(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "disk.img", 4<<20, 8)
	srv := webtest.Start(t, dir)
	srv.Set(func(s *webtest.Server) { s.NoRanges = true })
	_, _, err := New(context.Background(), fast()).OpenRemote(srv.URL + "/disk.img")
	if !errors.Is(err, ErrNoRanges) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "200 OK") {
		t.Fatalf("error %v", err)
	}
	if n := srv.Requests.Load(); n != 1 {
		t.Errorf("%d requests to a server without ranges, want 1", n)
	}
}

func TestStatusRedacted(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "disk.img", 1000, 9)
	srv := webtest.Start(t, dir)
	srv.Set(func(s *webtest.Server) { s.Status = http.StatusForbidden })
	u := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/disk.img?X-Amz-Signature=deadbeef&id=3"
	_, _, err := New(context.Background(), fast()).OpenRemote(u)
	var e *Error
	if !errors.As(err, &e) || e.Status != 403 || e.Attempts != 1 {
		t.Fatalf("error %v", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "hunter2") || strings.Contains(msg, "deadbeef") || !strings.Contains(msg, "REDACTED") || !strings.Contains(msg, "id=REDACTED") || !strings.Contains(msg, "HTTP 403") {
		t.Errorf("message %q", msg)
	}
	if n := srv.Requests.Load(); n != 1 {
		t.Errorf("a 403 was retried: %d requests", n)
	}
	h := srv.Headers()[0]
	if h.Get("Authorization") == "" {
		t.Error("the URL's user info did not become basic auth")
	}
}

func TestHeaders(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "disk.img", 300<<10, 10)
	srv := webtest.Start(t, dir)
	other := webtest.Start(t, dir)
	srv.Set(func(s *webtest.Server) { s.Need = "Authorization: Bearer s3cret" })
	o := fast()
	o.Header = http.Header{"Authorization": {"Bearer s3cret"}}
	op := New(context.Background(), o)
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readAll(t, src.R, want, 10)
	// Another host (one an image names, allowed) never gets the headers.
	src2, c2, err := op.OpenRemote(other.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	src2.R.ReadAt(make([]byte, 10), 200<<10)
	for _, h := range other.Headers() {
		if h.Get("Authorization") != "" {
			t.Fatal("the source's headers went to another host")
		}
	}
}

func TestEmptyAndSmall(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644)
	want := writeRandom(t, dir, "small", 1000, 11)
	srv := webtest.Start(t, dir)
	op := New(context.Background(), fast())
	src, _, err := op.OpenRemote(srv.URL + "/empty")
	if err != nil || src.Size != 0 {
		t.Fatalf("empty file: %+v, %v", src, err)
	}
	src, _, err = op.OpenRemote(srv.URL + "/small")
	if err != nil || src.Size != 1000 {
		t.Fatalf("small file: %+v, %v", src, err)
	}
	got := make([]byte, 2000)
	if n, err := src.R.ReadAt(got, 0); n != 1000 || err != io.EOF || !bytes.Equal(got[:n], want) {
		t.Fatalf("read past the end: %d, %v", n, err)
	}
	if n := srv.Requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (the first bytes come with the open)", n)
	}
	_, _, err = op.OpenRemote(srv.URL + "/missing")
	var e *Error
	if !errors.As(err, &e) || e.Status != 404 {
		t.Errorf("missing file: %v", err)
	}
}

func TestCancel(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "disk.img", 1<<20, 12)
	srv := webtest.Start(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	op := New(ctx, fast())
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Set(func(s *webtest.Server) { s.FailEvery = 1 })
	cancel()
	if _, err := src.R.ReadAt(make([]byte, 10), 500<<10); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
}

// TestCacheBound: the cache never holds more than CacheChunks chunks, and
// concurrent readers of one chunk share one request.
func TestCacheBound(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "disk.img", 2<<20, 13)
	srv := webtest.Start(t, dir)
	o := fast()
	op := New(context.Background(), o)
	src, c, err := op.OpenRemote(srv.URL + "/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Reset()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 10)
			src.R.ReadAt(p, 1<<20+5)
			if !bytes.Equal(p, want[1<<20+5:1<<20+15]) {
				t.Error("wrong bytes")
			}
		}()
	}
	wg.Wait()
	if n := srv.Requests.Load(); n != 1 {
		t.Errorf("8 readers of one chunk made %d requests", n)
	}
	readAll(t, src.R, want, 13)
	op.cache.mu.Lock()
	n := int64(op.cache.lru.Len()) * o.PageSize
	op.cache.mu.Unlock()
	if n > o.CacheBytes() {
		t.Errorf("cache holds %d bytes, bound %d", n, o.CacheBytes())
	}
}

// TestLookAheadSparesLargeReads: a short read after what the cache holds
// reads ahead (a pass of small reads costs one request a span), but not
// into the bytes a large read is fetching at that moment: a pass's block
// in flight next to a short run of data before it crossed the network
// twice (a monolithicSparse VMDK on a datastore fetched 1.15x its file).
func TestLookAheadSparesLargeReads(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "disk.img", 1<<20, 3)
	srv := webtest.Start(t, dir)
	o := fast() // 64 KiB spans of 16 KiB pages
	const largeOff, largeLen = 80 << 10, 64 << 10
	largeAt := fmt.Sprintf("bytes=%d-", largeOff)
	inFlight, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var ranges []string
	srv.Set(func(s *webtest.Server) {
		s.Before = func(r *http.Request) {
			rg := r.Header.Get("Range")
			mu.Lock()
			ranges = append(ranges, rg)
			mu.Unlock()
			if strings.HasPrefix(rg, largeAt) {
				close(inFlight)
				<-release
			}
		}
	})
	op := New(context.Background(), o)
	src, c, err := op.OpenRemote(srv.URL + "/disk.img") // the first span cached
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	large := make([]byte, largeLen)
	done := make(chan error, 1)
	go func() {
		_, err := src.R.ReadAt(large, largeOff)
		done <- err
	}()
	<-inFlight
	// A short read of the page after the first span: it continues what
	// the cache holds, so it would read a whole span ahead, into the
	// large read's bytes.
	small := make([]byte, 100)
	if _, err := src.R.ReadAt(small, 64<<10); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(small, want[64<<10:64<<10+100]) || !bytes.Equal(large, want[largeOff:largeOff+largeLen]) {
		t.Fatal("wrong bytes")
	}
	served := srv.Settle(64<<10 + 16<<10 + largeLen)
	if served != 64<<10+16<<10+largeLen {
		mu.Lock()
		t.Errorf("served %d bytes for %d asked; ranges %q", served, 64<<10+16<<10+largeLen, ranges)
		mu.Unlock()
	}
}
