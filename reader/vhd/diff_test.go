package vhd_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
	"vmimport/reader/vhd"
)

// diffVHD holds our VHD reader to qemu-img's on mutated images.
func diffVHD(tb testing.TB) *readertest.Diff {
	return &readertest.Diff{
		QemuFormat: "vpc", Format: "vhd",
		Bases:   readertest.LoadBases(tb, "testdata/dynamic-8m.vhd.gz", "testdata/empty-dynamic.vhd", "testdata/fixed-64k.vhd"),
		Open:    func(p string) (image.Image, error) { return reader.Open(p, reader.Options{}) },
		Allowed: vhdDifferences,
	}
}

// vhdDifferences are the cases where we refuse what qemu-img reads, or
// read what it refuses, on purpose.
var vhdDifferences = []readertest.Difference{{
	Name: "footer copy at offset 0 damaged",
	Why: "qemu reads a dynamic disk's footer from its copy at offset 0 only and refuses the disk when that copy is damaged " +
		"(\"Incorrect header checksum\", \"invalid VPC image\"); the specification makes the footer in the last 512 bytes " +
		"the primary, and we read by it, with a warning, when it is sound",
	Applies: func(o *readertest.Outcome) bool {
		b := o.Data
		if o.Ours != nil || len(b) < 1024 {
			return false
		}
		tail, head := b[len(b)-512:], b[:512]
		return string(tail[:8]) == "conectix" && binary.BigEndian.Uint32(tail[64:]) == vhd.Checksum(tail, 64) &&
			(string(head) != string(tail)) &&
			(strings.Contains(o.QemuMsg, "Incorrect header checksum") || strings.Contains(o.QemuMsg, "invalid VPC image"))
	},
}}

// FuzzDiff mutates the bases: make fuzz runs it for minutes.
func FuzzDiff(f *testing.F) { diffVHD(f).Fuzz(f) }

// TestDiffRandom is the short run CI makes: random mutations from a fixed
// seed.
func TestDiffRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("runs qemu-img sixty times")
	}
	diffVHD(t).Random(t, 30, 1)
}
