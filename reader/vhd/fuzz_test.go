package vhd

import (
	"bytes"
	"encoding/binary"
	"testing"

	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// The fuzz targets feed parsers arbitrary bytes; FuzzOpen feeds whole
// files, encoded sparsely so that a multi-megabyte image is a small input:
// a flags byte, then records of a 4-byte little-endian sector index and
// 512 bytes of that sector. The file ends after the highest sector given.
// Flag bit 0 repairs the footer and dynamic header checksums, so mutations
// reach past them.

const sector = 512

var codec = readertest.SparseCodec{Unit: sector, MaxUnits: 1 << 15, Flags: true} // up to 16 MiB

func repair(s *readertest.Sparse) {
	fix := func(i int64) *footer {
		sec, ok := s.Units[i]
		if !ok || string(sec[:8]) != "conectix" {
			return nil
		}
		binary.BigEndian.PutUint32(sec[64:], checksum(sec, 64))
		f, _, _ := parseFooter(sec)
		return f
	}
	f := fix(s.Size/sector - 1)
	if f0 := fix(0); f == nil {
		f = f0
	}
	if f == nil || f.DataOffset%sector != 0 || f.DataOffset >= uint64(s.Size) {
		return
	}
	i := int64(f.DataOffset / sector)
	h := make([]byte, dynHeaderSize)
	s.ReadAt(h, int64(f.DataOffset))
	binary.BigEndian.PutUint32(h[36:], checksum(h, 36))
	s.Units[i], s.Units[i+1] = h[:sector], h[sector:]
}

func seedFiles(f *testing.F) [][]byte {
	files := readertest.Seeds(f, "*.*")
	// A differencing disk with 4 KiB blocks and locators.
	bd := &Builder{DiskType: 4, Size: 64 << 10, Cyl: 4, Heads: 4, SPT: 8, Creator: "win ", BlockSize: 4096,
		ParentName: "p.vhd", Locators: map[string]string{"W2ru": `.\p.vhd`, "MacX": "file://./p.vhd"},
		Blocks: map[int64]BlockData{1: {Bitmap: []byte{0xF0}, Data: bytes.Repeat([]byte{7}, 4096)}}}
	files = append(files, bd.Bytes())
	bd.DiskType = 3
	files = append(files, bd.Bytes())
	return files
}

func FuzzFooter(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(b[len(b)-footerSize:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fix := range []bool{false, true} {
			b := append(bytes.Clone(b), make([]byte, max(0, footerSize-len(b)))...)
			if fix {
				copy(b, "conectix")
				binary.BigEndian.PutUint32(b[64:], checksum(b[:footerSize], 64))
			}
			ft, _, rule := parseFooter(b)
			if rule == "" {
				size, _ := ft.virtualSize()
				if size < 0 || size%512 != 0 {
					t.Fatalf("virtual size %d", size)
				}
			}
		}
	})
}

func FuzzDynHeader(f *testing.F) {
	for _, b := range seedFiles(f) {
		if len(b) >= 512+dynHeaderSize && string(b[:8]) == "conectix" {
			f.Add(b[512 : 512+dynHeaderSize])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fix := range []bool{false, true} {
			b := append(bytes.Clone(b), make([]byte, max(0, dynHeaderSize-len(b)))...)
			if fix {
				copy(b, "cxsparse")
				binary.BigEndian.PutUint32(b[36:], checksum(b[:dynHeaderSize], 36))
			}
			h, _, rule := parseDynHeader(b)
			if rule == "" && (h.bitmapSize() < 512 || h.bitmapSize()%512 != 0) {
				t.Fatalf("bitmap size %d", h.bitmapSize())
			}
		}
	})
}

func FuzzOpen(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(codec.Encode(b, 0))
		f.Add(codec.Encode(b, 1))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, flags := codec.Decode(data)
		if flags&1 != 0 {
			repair(s)
		}
		im, err := Open(image.Source{R: s, Size: s.Size, Path: "fuzz.vhd", Fd: -1}, &image.Options{})
		if err != nil {
			return
		}
		defer im.Close()
		readertest.Exercise(t, im)
	})
}
