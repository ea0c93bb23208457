package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"vmimport/reader/image"
)

// memSource is a disk in memory with a chosen allocation map: the map may
// call regions zero only where the bytes are zero.
type memSource struct {
	data    []byte
	zeroMap []bool // per 64 KiB chunk: the map says zero
	reads   atomic.Int64
	inRead  atomic.Int64
	maxRead atomic.Int64
	delay   time.Duration
	failAt  int64  // ReadAt covering this offset fails; -1 never
	onRead  func() // called at the start of every ReadAt, after reads counts it
}

const chunk = 64 << 10

func newMemSource(size int, seed uint64, fill float64) *memSource {
	rng := rand.New(rand.NewPCG(seed, 1))
	fillRNG := rand.NewChaCha8([32]byte{byte(seed)})
	s := &memSource{data: make([]byte, size), zeroMap: make([]bool, (size+chunk-1)/chunk), failAt: -1}
	for c := range s.zeroMap {
		switch r := rng.Float64(); {
		case r < fill:
			lo, hi := c*chunk, min((c+1)*chunk, size)
			fillRNG.Read(s.data[lo:hi])
		case r < fill+(1-fill)/2:
			s.zeroMap[c] = true // a hole the map knows about
		default:
			// zeros the map calls data: found by comparison
		}
	}
	return s
}

func (s *memSource) Size() int64 { return int64(len(s.data)) }

func (s *memSource) ReadAt(p []byte, off int64) (int, error) {
	s.reads.Add(1)
	if s.onRead != nil {
		s.onRead()
	}
	n := s.inRead.Add(1)
	defer s.inRead.Add(-1)
	for {
		m := s.maxRead.Load()
		if n <= m || s.maxRead.CompareAndSwap(m, n) {
			break
		}
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	if s.failAt >= 0 && off <= s.failAt && s.failAt < off+int64(len(p)) {
		return 0, errors.New("injected read error")
	}
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n2 := copy(p, s.data[off:])
	if n2 < len(p) {
		return n2, io.EOF
	}
	return n2, nil
}

func (s *memSource) Extent(off, n int64) (image.Extent, error) {
	c := off / chunk
	z := s.zeroMap[c]
	end := (c + 1) * chunk
	for end < off+n && int(end/chunk) < len(s.zeroMap) && s.zeroMap[end/chunk] == z {
		end += chunk
	}
	end = min(end, off+n, int64(len(s.data)))
	return image.Extent{Start: off, Length: end - off, Zero: z}, nil
}

// collect rebuilds the disk from the blocks and checks their order.
type collect struct {
	buf  bytes.Buffer
	next int64
}

func (c *collect) WriteBlock(_ context.Context, b *Block) error {
	if b.Off != c.next {
		return fmt.Errorf("block at %d, want %d", b.Off, c.next)
	}
	if b.Zero {
		if b.Data != nil {
			return errors.New("zero block with data")
		}
		c.buf.Write(make([]byte, b.Len))
	} else {
		if int64(len(b.Data)) != b.Len {
			return fmt.Errorf("data block of %d bytes says Len %d", len(b.Data), b.Len)
		}
		if bytes.Equal(b.Data, make([]byte, len(b.Data))) {
			return fmt.Errorf("all-zero block at %d handed on as data", b.Off)
		}
		c.buf.Write(b.Data)
	}
	c.next += b.Len
	return nil
}

func TestRunReproducesTheDisk(t *testing.T) {
	cases := []struct {
		size      int
		fill      float64
		workers   int
		blockSize int
	}{
		{size: 8 << 20, fill: 0.5, workers: 1, blockSize: 64 << 10},
		{size: 8 << 20, fill: 0.5, workers: 8, blockSize: 64 << 10},
		{size: 8<<20 + 12345, fill: 0.3, workers: 3, blockSize: 1 << 20},
		{size: 4 << 20, fill: 0, workers: 2, blockSize: 4 << 10},
		{size: 4 << 20, fill: 1, workers: 4, blockSize: 256 << 10},
		{size: 100, fill: 1, workers: 2, blockSize: 4 << 10},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d-%v-%d-%d", c.size, c.fill, c.workers, c.blockSize), func(t *testing.T) {
			src := newMemSource(c.size, 7, c.fill)
			var got collect
			st, err := Run(context.Background(), src, &got, Options{Workers: c.workers, BlockSize: c.blockSize})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.buf.Bytes(), src.data) {
				t.Fatal("output differs from the source")
			}
			if st.Done != int64(c.size) || st.Data+st.Skipped+st.Detected != int64(c.size) {
				t.Fatalf("stats don't add up: %+v", st)
			}
			if st.Read != st.Data+st.Detected {
				t.Fatalf("read %d bytes, handed on %d data and detected %d zero", st.Read, st.Data, st.Detected)
			}
		})
	}
}

func TestZeroRunsAreNotRead(t *testing.T) {
	src := newMemSource(64<<20, 1, 0)
	for i := range src.zeroMap {
		src.zeroMap[i] = true
	}
	var got collect
	st, err := Run(context.Background(), src, &got, Options{BlockSize: 1 << 20, MaxZeroRun: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if src.reads.Load() != 0 || st.Skipped != 64<<20 || st.ZeroRuns != 4 {
		t.Fatalf("reads %d, stats %+v: want no reads and 4 zero runs of 16 MiB", src.reads.Load(), st)
	}
}

func TestWorkersGiveTheSameStream(t *testing.T) {
	src := newMemSource(16<<20, 3, 0.4)
	hash := func(workers int) [32]byte {
		h := sha256.New()
		_, err := Run(context.Background(), src, SinkFunc(func(_ context.Context, b *Block) error {
			fmt.Fprintf(h, "%d %d %v;", b.Off, b.Len, b.Zero)
			h.Write(b.Data)
			return nil
		}), Options{Workers: workers, BlockSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		return [32]byte(h.Sum(nil))
	}
	if hash(1) != hash(8) {
		t.Fatal("1 worker and 8 workers handed on different streams")
	}
}

func TestReadErrorStopsTheRun(t *testing.T) {
	src := newMemSource(16<<20, 4, 1)
	src.failAt = 9<<20 + 5
	var got collect
	_, err := Run(context.Background(), src, &got, Options{Workers: 4, BlockSize: 1 << 20})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("at offset 9437184")) {
		t.Fatalf("err = %v; want the read error with its offset", err)
	}
	if got.next > 9<<20 {
		t.Fatalf("sink got blocks past the failure: %d", got.next)
	}
}

func TestSinkErrorStopsTheRun(t *testing.T) {
	src := newMemSource(16<<20, 5, 1)
	boom := errors.New("disk full")
	_, err := Run(context.Background(), src, SinkFunc(func(_ context.Context, b *Block) error {
		if b.Off >= 3<<20 {
			return boom
		}
		return nil
	}), Options{Workers: 2, BlockSize: 1 << 20})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
}

// transformSink is a Sink with a Transform, which Run must pick up.
type transformSink struct{ calls atomic.Int64 }

func (s *transformSink) WriteBlock(_ context.Context, b *Block) error {
	if b.Aux.(int64) != b.Off {
		return errors.New("aux lost")
	}
	return nil
}

func (s *transformSink) Transform() func(b *Block) error {
	return func(b *Block) error {
		s.calls.Add(1)
		b.Aux = b.Off
		return nil
	}
}

var _ Transformer = (*transformSink)(nil)

func TestTransformRunsInWorkers(t *testing.T) {
	src := newMemSource(4<<20, 6, 1)
	sink := &transformSink{}
	_, err := Run(context.Background(), src, sink, Options{Workers: 3, BlockSize: 64 << 10})
	if calls := &sink.calls; err != nil || calls.Load() != 64 {
		t.Fatalf("err %v, %d transform calls; want 64", err, calls.Load())
	}
}

func TestCancelStopsPromptly(t *testing.T) {
	src := newMemSource(64<<20, 8, 1)
	src.delay = 5 * time.Millisecond
	reading := make(chan struct{})
	var once sync.Once
	src.onRead = func() {
		if src.reads.Load() >= 8 {
			once.Do(func() { close(reading) })
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	before := runtime.NumGoroutine()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, src, SinkFunc(func(context.Context, *Block) error { return nil }), Options{Workers: 4, BlockSize: 64 << 10})
		done <- err
	}()
	<-reading // the pass is under way
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
	// The goroutines of the run end with it (the runtime may take a
	// moment to account for them).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left running (had %d)", runtime.NumGoroutine(), before)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// TestWindowBoundsBlocksHeld: a block is held from the read that fills it
// until the sink has taken it; with a slow sink the readers run ahead, and
// no more than Window blocks may be held at once, whatever the workers.
func TestWindowBoundsBlocksHeld(t *testing.T) {
	for _, c := range []struct{ workers, window int }{{4, 6}, {2, 10}, {1, 1}} {
		t.Run(fmt.Sprintf("workers=%d,window=%d", c.workers, c.window), func(t *testing.T) {
			src := newMemSource(8<<20, 9, 1) // all data: every block is read
			var taken, peak atomic.Int64
			src.onRead = func() {
				held := src.reads.Load() - taken.Load()
				for m := peak.Load(); held > m && !peak.CompareAndSwap(m, held); m = peak.Load() {
				}
			}
			slow := SinkFunc(func(context.Context, *Block) error {
				time.Sleep(2 * time.Millisecond)
				taken.Add(1)
				return nil
			})
			_, err := Run(context.Background(), src, slow, Options{Workers: c.workers, Window: c.window, BlockSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			if p := peak.Load(); p > int64(c.window) {
				t.Fatalf("%d blocks held at once, window %d", p, c.window)
			}
			// The slow sink lets the readers fill the window: the bound
			// was reached, so the check above could have failed.
			if p := peak.Load(); p < int64(c.window) {
				t.Errorf("at most %d blocks held: the window of %d was never full", p, c.window)
			}
			if m := src.maxRead.Load(); m > int64(c.workers) {
				t.Errorf("%d reads in flight with %d workers", m, c.workers)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Workers: -1}, {Workers: 1000}, {BlockSize: 1000}, {BlockSize: 3 << 20}, {BlockSize: 128 << 20}, {Workers: 4, Window: 2}} {
		if _, err := Run(context.Background(), newMemSource(1<<20, 1, 1), &collect{}, o); !errors.Is(err, ErrOptions) {
			t.Errorf("Run with %+v: err = %v, want ErrOptions", o, err)
		}
	}
}

func benchmarkRun(b *testing.B, fill float64) {
	src := newMemSource(64<<20, 10, fill)
	sink := SinkFunc(func(context.Context, *Block) error { return nil })
	b.SetBytes(src.Size())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Run(context.Background(), src, sink, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// The pipeline's own cost over an in-memory disk 0%, 50% and 100% allocated.
func BenchmarkConvertEmpty(b *testing.B) { benchmarkRun(b, 0) }
func BenchmarkConvertHalf(b *testing.B)  { benchmarkRun(b, 0.5) }
func BenchmarkConvertFull(b *testing.B)  { benchmarkRun(b, 1) }
