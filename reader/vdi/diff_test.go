package vdi_test

import (
	"testing"

	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// diffVDI holds our VDI reader to qemu-img's on mutated images.
func diffVDI(tb testing.TB) *readertest.Diff {
	return &readertest.Diff{
		QemuFormat: "vdi", Format: "vdi",
		Bases:   readertest.LoadBases(tb, "testdata/dynamic-4m.vdi.gz", "testdata/static-2m.vdi.gz"),
		Open:    func(p string) (image.Image, error) { return reader.Open(p, reader.Options{}) },
		Allowed: vdiDifferences,
	}
}

// vdiDifferences are the cases where we refuse what qemu-img reads, or
// read what it refuses, on purpose.
var vdiDifferences = []readertest.Difference{}

// FuzzDiff mutates the bases: make fuzz runs it for minutes.
func FuzzDiff(f *testing.F) { diffVDI(f).Fuzz(f) }

// TestDiffRandom is the short run CI makes: random mutations from a fixed
// seed.
func TestDiffRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("runs qemu-img sixty times")
	}
	diffVDI(t).Random(t, 30, 1)
}
