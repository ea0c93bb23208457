package vdi

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

// FuzzOpen feeds whole files, encoded sparsely so that a megabyte image is
// a small input: records of a 4-byte little-endian sector index and the
// 512 bytes of that sector. The file ends after the highest sector given.

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

func decodeSparse(data []byte) *sparse {
	s := &sparse{m: map[int64][]byte{}}
	for len(data) >= 4+sector {
		i := int64(binary.LittleEndian.Uint32(data) % (1 << 15)) // up to 16 MiB
		s.m[i] = bytes.Clone(data[4 : 4+sector])
		s.size = max(s.size, (i+1)*sector)
		data = data[4+sector:]
	}
	return s
}

func encodeSparse(b []byte) []byte {
	var out []byte
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

func seedFiles(f *testing.F) [][]byte {
	names, _ := filepath.Glob("testdata/*.vdi*")
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
		}
		files = append(files, b)
	}
	return files
}

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
		f.Add(encodeSparse(b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := decodeSparse(data)
		im, err := Open(image.Source{R: s, Size: s.size, Path: "fuzz.vdi", Fd: -1}, &image.Options{})
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
