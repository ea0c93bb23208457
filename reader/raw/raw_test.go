package raw_test

import (
	"os"
	"path/filepath"
	"testing"

	"vmimport/reader/image"
	"vmimport/reader/raw"
	"vmimport/reader/readertest"
)

// TestSparseFile reads a sparse RAW file: the bytes are the file's, and the
// holes the file system reports come back as zero runs.
func TestSparseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 24<<20 + 1234 // not a multiple of anything
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 5 << 20, 5<<20 + 70000, 17 << 20, size - 3000} {
		b := make([]byte, 3000)
		for i := range b {
			b[i] = byte(off>>12) + byte(i)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	im, err := raw.Open(image.Source{R: f, Size: size, Path: path, Fd: int(f.Fd())}, "file")
	if err != nil {
		t.Fatal(err)
	}
	readertest.Check(t, im, path)
	var holes int64
	for off := int64(0); off < size; {
		e, err := im.Extent(off, size-off)
		if err != nil {
			t.Fatal(err)
		}
		if e.Zero {
			holes += e.Length
		}
		off += e.Length
	}
	if holes < size/2 {
		t.Errorf("only %d of %d bytes reported as holes (does this file system report holes?)", holes, size)
	}
	// Without a descriptor, everything is data.
	im2, _ := raw.Open(image.Source{R: f, Size: size, Path: path, Fd: -1}, "section")
	if e, _ := im2.Extent(0, size); e.Zero || e.Length != size {
		t.Errorf("section extent %+v", e)
	}
}
