package readertest

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"vmimport/reader/image"
)

// CheckFast runs Check, or CheckQuick when the race detector is on or the
// tests run with -short.
func CheckFast(t *testing.T, im image.Image, rawPath string) {
	t.Helper()
	if Race || testing.Short() {
		CheckQuick(t, im, rawPath)
		return
	}
	Check(t, im, rawPath)
}

// CheckQuick makes the same kinds of checks as Check with far fewer bytes:
// one sequential pass, 30 random reads, 4 goroutines of 10 concurrent reads
// of at most 256 KiB, the reads at and across the end, and the allocation
// map. It keeps -race runs of compressed formats within seconds.
func CheckQuick(t *testing.T, im image.Image, rawPath string) {
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
	if info := im.Info(); info.Format == "" || info.VirtualSize != size {
		t.Errorf("Info() = %+v: want a format and virtual size %d", info, size)
	}
	compareRange(t, im, want, 0, size, 1<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	for range 30 {
		off := rng.Int64N(size)
		n := 1 + rng.Int64N(min(size-off, 256<<10))
		compareRange(t, im, want, off, n, n)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 8))
			for range 10 {
				off := rng.Int64N(size)
				n := 1 + rng.Int64N(min(size-off, 256<<10))
				compareRange(t, im, want, off, n, n)
			}
		}()
	}
	wg.Wait()
	p := make([]byte, 4096)
	if n, err := im.ReadAt(p, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
	}
	if size >= 100 {
		n, err := im.ReadAt(p, size-100)
		got := make([]byte, 100)
		want.ReadAt(got, size-100)
		if n != 100 || err != io.EOF || !bytes.Equal(p[:100], got) {
			t.Errorf("ReadAt across the end = %d, %v (or wrong bytes); want 100, io.EOF", n, err)
		}
	}
	checkExtents(t, im, want, size)
}
