package qcow2_test

import (
	"testing"

	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// diffQCOW2 holds our QCOW2 reader to qemu-img's on mutated images.
func diffQCOW2(tb testing.TB) *readertest.Diff {
	return &readertest.Diff{
		QemuFormat: "qcow2", Format: "qcow2",
		// The first four bases keep their places: the first byte of a
		// mutation program in testdata/fuzz picks its base.
		Bases: readertest.LoadBases(tb, "testdata/diff-512.qcow2", "testdata/diff-v2-4k.qcow2",
			"testdata/diff-extl2-16k.qcow2", "testdata/diff-zlib-4k.qcow2",
			"testdata/diff-extl2-64k.qcow2.gz", "testdata/diff-extl2-zstd-16k.qcow2", "testdata/diff-extl2-2M.qcow2.gz"),
		Open:    func(p string) (image.Image, error) { return reader.Open(p, reader.Options{}) },
		Allowed: qcow2Differences,
	}
}

// qcow2Differences are the cases where we refuse what qemu-img reads, or
// read what it refuses, on purpose.
var qcow2Differences = []readertest.Difference{}

// FuzzDiff mutates the bases: make fuzz runs it for minutes.
func FuzzDiff(f *testing.F) { diffQCOW2(f).Fuzz(f) }

// TestDiffRandom is the short run CI makes: random mutations from a fixed
// seed.
func TestDiffRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("runs qemu-img sixty times")
	}
	diffQCOW2(t).Random(t, 30, 1)
}
