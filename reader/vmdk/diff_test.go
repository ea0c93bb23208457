package vmdk_test

import (
	"testing"

	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// diffVMDK holds our VMDK reader to qemu-img's on mutated images.
func diffVMDK(tb testing.TB) *readertest.Diff {
	return &readertest.Diff{
		QemuFormat: "vmdk", Format: "vmdk",
		Bases:   readertest.LoadBases(tb, "testdata/qemu-monolithicSparse.vmdk", "testdata/qemu-streamOptimized.vmdk", "testdata/sparse-zeroed-8k.vmdk", "testdata/stream-footer-4k.vmdk"),
		Open:    func(p string) (image.Image, error) { return reader.Open(p, reader.Options{}) },
		Allowed: vmdkDifferences,
	}
}

// vmdkDifferences are the cases where we refuse what qemu-img reads, or
// read what it refuses, on purpose.
var vmdkDifferences = []readertest.Difference{}

// FuzzDiff mutates the bases: make fuzz runs it for minutes.
func FuzzDiff(f *testing.F) { diffVMDK(f).Fuzz(f) }

// TestDiffRandom is the short run CI makes: random mutations from a fixed
// seed.
func TestDiffRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("runs qemu-img sixty times")
	}
	diffVMDK(t).Random(t, 30, 1)
}
