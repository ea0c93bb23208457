// Package readertest is the conformance suite every format reader runs:
// like restic's backend tests, a new format gets every check by calling
// Check with an opened image and qemu-img's RAW conversion of the same file.
package readertest

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"vmimport/reader/image"
)

// Check compares im with the RAW bytes in rawPath (qemu-img's conversion of
// the same source) and checks the interface's contract: size, whole and
// random reads, concurrent reads, reads at and past the end, and an
// allocation map that covers the disk and never calls data zero.
func Check(t *testing.T, im image.Image, rawPath string) {
	t.Helper()
	check(t, im, rawPath, effort{random: 100, randomMax: 1 << 20, workers: 4, perWorker: 16, concurrentMax: 256 << 10})
}

// effort is how many bytes the suite reads beyond one sequential pass.
type effort struct {
	random, workers, perWorker int
	randomMax, concurrentMax   int64
}

func check(t *testing.T, im image.Image, rawPath string, e effort) {
	t.Helper()
	want, err := os.Open(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	fi, err := want.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	if im.Size() != size {
		t.Fatalf("Size() = %d, qemu-img says %d", im.Size(), size)
	}
	info := im.Info()
	if info.Format == "" || info.VirtualSize != size {
		t.Errorf("Info() = %+v: want a format and virtual size %d", info, size)
	}
	t.Run("sequential", func(t *testing.T) { compareRange(t, im, want, 0, size, 1<<20) })
	t.Run("random", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for range e.random {
			off := rng.Int64N(size)
			n := 1 + rng.Int64N(min(size-off, e.randomMax))
			compareRange(t, im, want, off, n, n)
			if t.Failed() {
				return
			}
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for w := range e.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for range e.perWorker {
					off := rng.Int64N(size)
					n := 1 + rng.Int64N(min(size-off, e.concurrentMax))
					compareRange(t, im, want, off, n, n)
				}
			}()
		}
		wg.Wait()
	})
	t.Run("end", func(t *testing.T) {
		p := make([]byte, 4096)
		if n, err := im.ReadAt(p, size); n != 0 || err != io.EOF {
			t.Errorf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
		}
		if size >= 100 {
			n, err := im.ReadAt(p, size-100)
			if n != 100 || err != io.EOF {
				t.Errorf("ReadAt across the end = %d, %v; want 100, io.EOF", n, err)
			}
			got := make([]byte, 100)
			if _, err := want.ReadAt(got, size-100); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p[:100], got) {
				t.Errorf("ReadAt across the end returned the wrong bytes")
			}
		}
	})
	t.Run("extents", func(t *testing.T) { checkExtents(t, im, want, size) })
}

func compareRange(t *testing.T, im image.Image, want io.ReaderAt, off, n, chunk int64) {
	t.Helper()
	got := make([]byte, chunk)
	exp := make([]byte, chunk)
	for pos := off; pos < off+n; pos += chunk {
		k := min(chunk, off+n-pos)
		g, w := got[:k], exp[:k]
		m, err := im.ReadAt(g, pos)
		if m != int(k) || (err != nil && !(errors.Is(err, io.EOF) && pos+k == im.Size())) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v", k, pos, m, err)
			return
		}
		if _, err := want.ReadAt(w, pos); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(g, w) {
			i := 0
			for i < len(g) && g[i] == w[i] {
				i++
			}
			t.Errorf("bytes differ from qemu-img's at offset %d (read of %d at %d)", pos+int64(i), k, pos)
			return
		}
	}
}

func checkExtents(t *testing.T, im image.Image, want io.ReaderAt, size int64) {
	buf := make([]byte, 1<<20)
	var zero, calls int64
	for off := int64(0); off < size; {
		e, err := im.Extent(off, size-off)
		if err != nil {
			t.Fatalf("Extent(%d) = %v", off, err)
		}
		calls++
		if e.Start != off || e.Length <= 0 || e.Start+e.Length > size {
			t.Fatalf("Extent(%d, %d) = %+v: must start at the offset and stay inside the disk", off, size-off, e)
		}
		if e.Zero {
			zero += e.Length
			for p := e.Start; p < e.Start+e.Length; p += int64(len(buf)) {
				k := min(int64(len(buf)), e.Start+e.Length-p)
				if _, err := want.ReadAt(buf[:k], p); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if !bytes.Equal(buf[:k], make([]byte, k)) {
					t.Fatalf("Extent %+v says zero but qemu-img has data in [%d, +%d)", e, p, k)
				}
			}
		}
		off = e.Start + e.Length
	}
	// Unaligned questions get answers that start where asked.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		off := rng.Int64N(size)
		n := 1 + rng.Int64N(size-off)
		e, err := im.Extent(off, n)
		if err != nil || e.Start != off || e.Length <= 0 || e.Length > n {
			t.Fatalf("Extent(%d, %d) = %+v, %v", off, n, e, err)
		}
	}
	t.Logf("%d extent calls, %d of %d bytes known zero", calls, zero, size)
}
