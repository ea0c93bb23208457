package vmdk_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/stream"
)

// readThrough reads the whole image through the stream pipeline into a
// sink that discards the blocks, as a conversion to RAW would.
func readThrough(tb testing.TB, path string, workers int) stream.Stats {
	im, err := reader.Open(path, reader.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer im.Close()
	st, err := stream.Run(context.Background(), im, stream.SinkFunc(func(context.Context, *stream.Block) error { return nil }), stream.Options{Workers: workers})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func benchRead(b *testing.B, subformat string) {
	disk := testDisk(b)
	if disk == "" {
		b.Skip("no test disk")
	}
	v := filepath.Join(b.TempDir(), "x.vmdk")
	out, err := exec.Command("qemu-img", "convert", "-O", "vmdk", "-o", "subformat="+subformat, disk, v).CombinedOutput()
	if err != nil {
		b.Skipf("qemu-img: %v %s", err, out)
	}
	fi, _ := os.Stat(disk)
	for _, w := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			b.SetBytes(fi.Size())
			b.ReportAllocs()
			for b.Loop() {
				readThrough(b, v, w)
			}
		})
	}
}

// BenchmarkReadStreamOptimized reads the 47 MiB test disk (12 MiB of files)
// as streamOptimized through the pipeline; MB/s are virtual bytes.
func BenchmarkReadStreamOptimized(b *testing.B) { benchRead(b, "streamOptimized") }

// BenchmarkReadMonolithicSparse is the same for monolithicSparse.
func BenchmarkReadMonolithicSparse(b *testing.B) { benchRead(b, "monolithicSparse") }

// TestPerfVsQemu times qemu-img convert -O raw against our pipeline on a
// disk holding VMDK_PERF_MIB MiB of data (half text, half random, in 1 MiB
// runs, with zero gaps), for streamOptimized, monolithicSparse and
// monolithicFlat. It runs only when VMDK_PERF_MIB is set:
//
//	VMDK_PERF_MIB=1024 go test ./reader/vmdk -run TestPerfVsQemu -v
func TestPerfVsQemu(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("VMDK_PERF_MIB"))
	if mib <= 0 {
		t.Skip("set VMDK_PERF_MIB to run")
	}
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "perf.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	chunk := make([]byte, 1<<20)
	for i := range mib + mib/8 {
		if i%8 == 7 {
			continue // a zero gap
		}
		if i%2 == 0 {
			for j := 0; j < len(chunk); {
				j += copy(chunk[j:], fmt.Sprintf("%08d the quick brown fox %d jumps over the lazy dog\n", j, rng.IntN(1<<20)))
			}
		} else {
			for j := range chunk {
				chunk[j] = byte(rng.Uint32())
			}
		}
		if _, err := f.WriteAt(chunk, int64(i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	f.Truncate(int64(mib+mib/8) << 20)
	f.Close()
	for _, sub := range []string{"streamOptimized", "monolithicSparse", "monolithicFlat"} {
		v := filepath.Join(dir, sub+".vmdk")
		testkit.QemuImg(t, "convert", "-O", "vmdk", "-o", "subformat="+sub, raw, v)
		// Warm the page cache, then time each once.
		readThrough(t, v, 2)
		start := time.Now()
		testkit.QemuImg(t, "convert", "-O", "raw", v, filepath.Join(dir, "out.raw"))
		q := time.Since(start)
		os.Remove(filepath.Join(dir, "out.raw"))
		var ours [3]time.Duration
		for _, w := range []int{1, 2} {
			start = time.Now()
			readThrough(t, v, w)
			ours[w] = time.Since(start)
		}
		t.Logf("%s: qemu-img convert -O raw %v; ours workers=1 %v (%.2fx qemu's speed), workers=2 %v (%.2fx); 2 workers / 1 worker %.2fx",
			sub, q.Round(time.Millisecond), ours[1].Round(time.Millisecond), q.Seconds()/ours[1].Seconds(),
			ours[2].Round(time.Millisecond), q.Seconds()/ours[2].Seconds(), ours[1].Seconds()/ours[2].Seconds())
		os.Remove(v)
		os.Remove(filepath.Join(dir, sub+"-flat.vmdk"))
	}
}
