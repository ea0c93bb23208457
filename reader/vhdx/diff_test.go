package vhdx_test

import (
	"testing"

	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// diffVHDX holds our VHDX reader to qemu-img's on mutated images.
func diffVHDX(tb testing.TB) *readertest.Diff {
	return &readertest.Diff{
		QemuFormat: "vhdx", Format: "vhdx",
		Bases:   readertest.LoadBases(tb, "testdata/dynamic-8m.vhdx.gz", "testdata/fixed-4m.vhdx.gz"),
		Open:    func(p string) (image.Image, error) { return reader.Open(p, reader.Options{}) },
		Allowed: vhdxDifferences,
	}
}

// vhdxDifferences are the cases where we refuse what qemu-img reads, or
// read what it refuses, on purpose.
var vhdxDifferences = []readertest.Difference{}

// FuzzDiff mutates the bases: make fuzz runs it for minutes.
func FuzzDiff(f *testing.F) { diffVHDX(f).Fuzz(f) }

// TestDiffRandom is the short run CI makes: random mutations from a fixed
// seed.
func TestDiffRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("runs qemu-img sixty times")
	}
	diffVHDX(t).Random(t, 30, 1)
}
