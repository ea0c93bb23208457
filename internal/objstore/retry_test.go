package objstore_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"vmimport/internal/objstore"
)

// TestPacedStorm: eight senders meet a storm of 503 SlowDown that lasts
// 3 s. The store's one pacer spaces the calls of all of them together:
// after the first second the store sees a few calls a second, not eight
// senders' worth; every retry is heard; every part lands once the storm
// is over.
func TestPacedStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a storm of 3 s")
	}
	start := time.Now()
	storm := 3 * time.Second
	var mu sync.Mutex
	var calls []time.Duration
	m := &objstore.Memory{Fault: func(op, key string, n int) error {
		if op != "UploadPart" {
			return nil
		}
		at := time.Since(start)
		mu.Lock()
		calls = append(calls, at)
		mu.Unlock()
		if at < storm {
			return objstore.Injected(op, 503, "SlowDown")
		}
		return nil
	}}
	bucket := m.Bucket("b")
	id, err := bucket.CreateUpload(context.Background(), "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := objstore.NewRetrying(bucket, objstore.Policy{Attempts: 30, MinBackoff: 50 * time.Millisecond, MaxBackoff: 400 * time.Millisecond}, objstore.NewPacer(0))
	var retries []objstore.Retry
	ctx := objstore.WithTrace(context.Background(), &objstore.Trace{Retry: func(r objstore.Retry) {
		mu.Lock()
		retries = append(retries, r)
		mu.Unlock()
	}})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(i)}, 1000)
			_, err := s.UploadPart(ctx, "k", id, int32(i+1), bytes.NewReader(p), int64(len(p)), md5.Sum(p))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	perSecond := map[int]int{}
	for _, at := range calls {
		if at < storm {
			perSecond[int(at/time.Second)]++
		}
	}
	t.Logf("calls during the storm, per second: %v; %d retries heard; all landed %s after the storm", perSecond, len(retries), time.Since(start)-storm)
	for sec := 1; sec < int(storm/time.Second); sec++ {
		if perSecond[sec] > 4 {
			t.Errorf("second %d of the storm: %d calls, want at most 4 (the senders are paced together)", sec, perSecond[sec])
		}
	}
	if len(retries) != len(calls)-8 {
		t.Errorf("%d retries heard, %d calls for 8 parts", len(retries), len(calls))
	}
	for _, r := range retries {
		if r.Op != "UploadPart" || r.Part < 1 || objstore.Code(r.Err) != "SlowDown" || r.Attempts != 30 {
			t.Fatalf("retry event %+v", r)
		}
	}
}

// TestCancelMidRetry: a call cancelled while it waits to try again ends
// with the context's cause, and says what failed last.
func TestCancelMidRetry(t *testing.T) {
	m := &objstore.Memory{Fault: func(op, key string, n int) error { return objstore.Injected(op, 503, "SlowDown") }}
	s := objstore.NewRetrying(m.Bucket("b"), objstore.Policy{MinBackoff: time.Second, MaxBackoff: time.Second}, nil)
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("the batch was interrupted")
	ctx = objstore.WithTrace(ctx, &objstore.Trace{Retry: func(objstore.Retry) { cancel(stop) }})
	_, err := s.Head(ctx, "k")
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), "SlowDown") {
		t.Fatalf("cancelled mid-retry: %v", err)
	}
	if n := m.Calls("HeadObject"); n != 1 {
		t.Fatalf("%d calls after the cancel, want 1", n)
	}
	ctx, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := s.Head(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call under a cancelled context: %v", err)
	}
}
