package vdi_test

import (
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
)

// BenchmarkRead reads a qemu-made dynamic image of a 48 MiB ext4 disk
// from start to end in 1 MiB reads.
func BenchmarkRead(b *testing.B) {
	dir := b.TempDir()
	disk := testkit.MakeDisk(b, dir, testkit.DiskOptions{SizeMiB: 48, Tail: true})
	p := testkit.Convert(b, disk, filepath.Join(dir, "x.img"), "vdi", "-o", "static=off")
	im, err := reader.Open(p, reader.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(im.Size())
	b.ReportAllocs()
	for b.Loop() {
		for off := int64(0); off < im.Size(); off += int64(len(buf)) {
			if _, err := im.ReadAt(buf, off); err != nil && off+int64(len(buf)) < im.Size() {
				b.Fatal(err)
			}
		}
	}
}
