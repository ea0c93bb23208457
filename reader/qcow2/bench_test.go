package qcow2_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// BenchmarkRead reads a qemu-made plain image of a 48 MiB ext4 disk from
// start to end in 1 MiB reads.
func BenchmarkRead(b *testing.B) {
	readertest.BenchmarkRead(b, open, "qcow2")
}

// BenchmarkConvert reads one disk as convert's pipeline does (the
// allocation map, then 1 MiB reads of what it does not call zero) from
// plain and extended-L2 images of the same data, made by qemu-img convert
// with 64 KiB and 2 MiB clusters: the extended-L2 cases should take about
// as long as the plain ones. The disk: 256 MiB, an ext4 partition of 128
// MiB with 42 MiB of files, the last MiB random.
func BenchmarkConvert(b *testing.B) {
	dir := b.TempDir()
	disk := testkit.MakeDisk(b, dir, testkit.DiskOptions{SizeMiB: 256, Tail: true})
	for _, c := range []struct{ name, opts string }{
		{"plain-64k", "cluster_size=64k"},
		{"extl2-64k", "cluster_size=64k,extended_l2=on"},
		{"plain-2M", "cluster_size=2M"},
		{"extl2-2M", "cluster_size=2M,extended_l2=on"},
		{"zlib-plain-64k", "cluster_size=64k"},
		{"zlib-extl2-64k", "cluster_size=64k,extended_l2=on"},
	} {
		opts := []string{"-o", c.opts}
		if c.name[:4] == "zlib" {
			opts = append(opts, "-c")
		}
		p := testkit.Convert(b, disk, filepath.Join(dir, c.name+".qcow2"), "qcow2", opts...)
		b.Run(c.name, func(b *testing.B) {
			im, err := open(p)
			if err != nil {
				b.Fatal(err)
			}
			defer im.Close()
			buf, zero := make([]byte, 1<<20), make([]byte, 1<<20)
			b.SetBytes(im.Size())
			b.ReportAllocs()
			for b.Loop() {
				if err := pipelinePass(im, buf, zero); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// pipelinePass reads im as stream.Pipeline does: blocks of len(buf),
// skipping those the allocation map calls zero, the others read and
// compared with zeros.
func pipelinePass(im image.Image, buf, zero []byte) error {
	block := int64(len(buf))
	var ext image.Extent
	size := im.Size()
	for off := int64(0); off < size; off += block {
		end := min(off+block, size)
		skip := true
		for from := off; from < end; {
			if from < ext.Start || from >= ext.Start+ext.Length {
				e, err := im.Extent(from, size-from)
				if err != nil {
					return err
				}
				ext = e
			}
			if !ext.Zero {
				skip = false
				break
			}
			from = ext.Start + ext.Length
		}
		if skip {
			continue
		}
		n, err := im.ReadAt(buf[:end-off], off)
		if n != int(end-off) {
			return fmt.Errorf("ReadAt(%d) = %d, %v", off, n, err)
		}
		_ = bytes.Equal(buf[:n], zero[:n])
	}
	return nil
}

func open(p string) (image.Image, error) { return reader.Open(p, reader.Options{}) }
