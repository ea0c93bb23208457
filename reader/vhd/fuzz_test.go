package vhd

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"vmimport/reader/image"
)

// The fuzz targets feed parsers arbitrary bytes; FuzzOpen feeds whole
// files, encoded sparsely so that a multi-megabyte image is a small input:
// a flags byte, then records of a 4-byte little-endian sector index and
// 512 bytes of that sector. The file ends after the highest sector given.
// Flag bit 0 repairs the footer and dynamic header checksums, so mutations
// reach past them.

const sector = 512

type sparse struct {
	m    map[int64][]byte
	size int64
}

func (s *sparse) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off+int64(n) < s.size {
		pos := off + int64(n)
		k := min(len(p)-n, int(sector-pos%sector), int(s.size-pos))
		if sec, ok := s.m[pos/sector]; ok {
			copy(p[n:n+k], sec[pos%sector:])
		} else {
			clear(p[n : n+k])
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func decodeSparse(data []byte) (*sparse, byte) {
	s := &sparse{m: map[int64][]byte{}}
	if len(data) == 0 {
		return s, 0
	}
	flags := data[0]
	data = data[1:]
	for len(data) >= 4+sector {
		i := int64(binary.LittleEndian.Uint32(data) % (1 << 15)) // up to 16 MiB
		s.m[i] = bytes.Clone(data[4 : 4+sector])
		s.size = max(s.size, (i+1)*sector)
		data = data[4+sector:]
	}
	return s, flags
}

func encodeSparse(b []byte, flags byte) []byte {
	out := []byte{flags}
	for i := 0; i < len(b); i += sector {
		sec := b[i:min(len(b), i+sector)]
		if i+sector < len(b) && bytes.Count(sec, []byte{0}) == len(sec) {
			continue
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(i/sector))
		out = append(out, sec...)
		out = append(out, make([]byte, sector-len(sec))...)
	}
	return out
}

func (s *sparse) repair() {
	fix := func(i int64) *footer {
		sec, ok := s.m[i]
		if !ok || string(sec[:8]) != "conectix" {
			return nil
		}
		binary.BigEndian.PutUint32(sec[64:], checksum(sec, 64))
		f, _, _ := parseFooter(sec)
		return f
	}
	f := fix(s.size/sector - 1)
	if f0 := fix(0); f == nil {
		f = f0
	}
	if f == nil || f.DataOffset%sector != 0 || f.DataOffset >= uint64(s.size) {
		return
	}
	i := int64(f.DataOffset / sector)
	h := make([]byte, dynHeaderSize)
	s.ReadAt(h, int64(f.DataOffset))
	binary.BigEndian.PutUint32(h[36:], checksum(h, 36))
	s.m[i], s.m[i+1] = h[:sector], h[sector:]
}

func seedFiles(f *testing.F) [][]byte {
	names, _ := filepath.Glob("testdata/*.*")
	var files [][]byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		if filepath.Ext(n) == ".gz" {
			r, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				f.Fatal(err)
			}
			if b, err = io.ReadAll(r); err != nil {
				f.Fatal(err)
			}
		} else if filepath.Ext(n) == ".md" {
			continue
		}
		files = append(files, b)
	}
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
		f.Add(encodeSparse(b, 0))
		f.Add(encodeSparse(b, 1))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, flags := decodeSparse(data)
		if flags&1 != 0 {
			s.repair()
		}
		im, err := Open(image.Source{R: s, Size: s.size, Path: "fuzz.vhd", Fd: -1}, &image.Options{})
		if err != nil {
			return
		}
		defer im.Close()
		exercise(t, im)
	})
}

// exercise reads an opened image the way the pipeline does, within bounds
// that keep one fuzz run short.
func exercise(t *testing.T, im image.Image) {
	_ = im.Info()
	size := im.Size()
	buf := make([]byte, 64<<10)
	off := int64(0)
	for calls := 0; off < size && calls < 64; calls++ {
		e, err := im.Extent(off, size-off)
		if err != nil {
			return
		}
		if e.Start != off || e.Length <= 0 || e.Start+e.Length > size {
			t.Fatalf("Extent(%d) = %+v", off, e)
		}
		n, err := im.ReadAt(buf, off)
		if err == nil && n != len(buf) || n > len(buf) {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		off += e.Length
	}
	for _, o := range []int64{size - 100, size / 2, size - 1} {
		if o >= 0 {
			im.ReadAt(buf[:1000], o)
		}
	}
}
