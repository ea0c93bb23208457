package qcow2_test

import (
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/stream"
	"vmimport/writer/qcow2"
)

// TestOtherSources converts the same disk from every format qemu-img writes
// that our readers may read (VMDK, VHD, VHDX, VDI); formats without a reader
// yet are skipped, so each new reader is covered as it lands.
func TestOtherSources(t *testing.T) {
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	disk := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 16, Tail: true, Seed: 11})
	for _, f := range []struct {
		name, format string
		opts         []string
	}{
		{"vmdk-monolithicSparse", "vmdk", nil},
		{"vmdk-streamOptimized", "vmdk", []string{"-o", "subformat=streamOptimized"}},
		{"vhd-dynamic", "vpc", nil},
		{"vhd-fixed", "vpc", []string{"-o", "subformat=fixed"}},
		{"vhdx", "vhdx", nil},
		{"vdi", "vdi", nil},
	} {
		t.Run(f.name, func(t *testing.T) {
			src := testkit.Convert(t, disk, filepath.Join(t.TempDir(), "src."+f.format), f.format, f.opts...)
			im, err := reader.Open(src, reader.Options{})
			if err != nil {
				t.Fatal(err) // every format here has a reader: a refusal is a regression
			}
			im.Close()
			// -f: qemu-img probes a fixed VHD (no footer copy at offset 0)
			// as RAW, footer included; name the format, and compare our
			// output with the RAW oracle rather than with the probed source.
			oracle := filepath.Join(t.TempDir(), "oracle.raw")
			testkit.QemuImg(t, "convert", "-f", f.format, "-O", "raw", src, oracle)
			opts := []qcow2.Options{{}, {Compression: qcow2.CompressZstd}}
			if testing.Short() || raceEnabled {
				opts = opts[:1]
			}
			for _, o := range opts {
				out := encode(t, src, filepath.Join(t.TempDir(), "out.qcow2"), o, stream.Options{})
				verify(t, oracle, out, oracle, true, false, false)
			}
		})
	}
}
