package vdi

import (
	"encoding/binary"
	"testing"

	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// FuzzOpen feeds whole files, encoded sparsely so that a megabyte image is
// a small input: records of a 4-byte little-endian sector index and the
// 512 bytes of that sector. The file ends after the highest sector given.

var codec = readertest.SparseCodec{Unit: 512, MaxUnits: 1 << 15} // up to 16 MiB

func seedFiles(f *testing.F) [][]byte { return readertest.Seeds(f, "*.vdi*") }

func FuzzHeader(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(b[:512])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p := make([]byte, 512)
		copy(p, b)
		binary.LittleEndian.PutUint32(p[0x40:], signature)
		h, _, rule, _ := parseHeader(p, -1)
		if rule == "" && (h.BlockSize&(h.BlockSize-1) != 0 || h.DiskSize > uint64(image.MaxVirtualSize)) {
			t.Fatalf("accepted %+v", h)
		}
	})
}

func FuzzOpen(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(codec.Encode(b, 0))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, _ := codec.Decode(data)
		im, err := Open(image.Source{R: s, Size: s.Size, Path: "fuzz.vdi", Fd: -1}, &image.Options{})
		if err != nil {
			return
		}
		defer im.Close()
		_ = im.Info()
		size := im.Size()
		buf := make([]byte, 64<<10)
		off := int64(0)
		for calls := 0; off < size && calls < 64; calls++ {
			e, err := im.Extent(off, size-off)
			if err != nil || e.Start != off || e.Length <= 0 || e.Start+e.Length > size {
				t.Fatalf("Extent(%d) = %+v, %v", off, e, err)
			}
			if n, err := im.ReadAt(buf, off); err == nil && n != len(buf) || n > len(buf) {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
			off += e.Length
		}
		for _, o := range []int64{size - 100, size / 2, size - 1} {
			if o >= 0 {
				im.ReadAt(buf[:1000], o)
			}
		}
	})
}
