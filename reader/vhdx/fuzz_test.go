package vhdx

import (
	"bytes"
	"encoding/binary"
	"testing"

	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// FuzzOpen feeds whole files, encoded sparsely so that a multi-megabyte
// image is a small input: a flags byte, then records of a 4-byte
// little-endian page index and the 4096 bytes of that page. The file ends
// after the highest page given. Flag bit 0 repairs the CRC-32C of the
// headers and region tables, so that mutations reach the metadata and BAT.

const page = 4096

var codec = readertest.SparseCodec{Unit: page, MaxUnits: 1 << 13, Flags: true} // up to 32 MiB

// repair recomputes the checksums of the headers and region tables.
func repair(s *readertest.Sparse) {
	fix := func(off, n int64) {
		b := make([]byte, n)
		s.ReadAt(b, off)
		binary.LittleEndian.PutUint32(b[4:], crc(b, 4))
		for i := int64(0); i < n; i += page {
			s.Units[(off+i)/page] = b[i : i+page]
		}
		s.Size = max(s.Size, off+n)
	}
	fix(header1Off, headerSize)
	fix(header2Off, headerSize)
	fix(region1Off, regionSize)
	fix(region2Off, regionSize)
}

func seedFiles(f *testing.F) [][]byte {
	files := readertest.Seeds(f, "*.gz")
	// A dirty copy of the first: a log entry writing a BAT page and
	// zeroing a page, to replay.
	if len(files) > 0 {
		b := bytes.Clone(files[0])
		g := [16]byte{1, 2, 3}
		for _, off := range []int{header1Off, header2Off} {
			copy(b[off+48:], g[:])
		}
		FixHeaders(b)
		bat, _ := Regions(b)
		logOff := binary.LittleEndian.Uint64(b[CurrentHeader(b)+72:])
		e := LogEntryWith(g, 5, 0, uint64(len(b)), uint64(len(b)),
			Desc{FileOffset: bat, Page: bytes.Clone(b[bat : bat+4096])},
			Desc{Zero: true, FileOffset: 1 << 20, Length: 8192})
		copy(b[logOff:], e)
		files = append(files, b)
	}
	return files
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
		im, err := Open(image.Source{R: s, Size: s.Size, Path: "fuzz.vhdx", Fd: -1}, &image.Options{})
		if err != nil {
			return
		}
		defer im.Close()
		readertest.Exercise(t, im)
	})
}

// pad copies b into n bytes, stamping sig at 0 and, if fix, a valid
// CRC-32C at 4.
func pad(b []byte, n int, sig string, fix bool) []byte {
	out := make([]byte, n)
	copy(out, b)
	if fix {
		copy(out, sig)
		binary.LittleEndian.PutUint32(out[4:], crc(out, 4))
	}
	return out
}

func FuzzHeader(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(b[header1Off : header1Off+256])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		parseHeader(pad(b, headerSize, "head", false))
		parseHeader(pad(b, headerSize, "head", true))
	})
}

func FuzzRegionTable(f *testing.F) {
	for _, b := range seedFiles(f) {
		f.Add(b[region1Off : region1Off+256])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		parseRegionTable(pad(b, regionSize, "regi", false))
		es, _, rule := parseRegionTable(pad(b, regionSize, "regi", true))
		if rule == "" && len(es) > maxEntries {
			t.Fatalf("%d entries", len(es))
		}
	})
}

func FuzzMetadataTable(f *testing.F) {
	for _, b := range seedFiles(f) {
		_, meta := regionsOf(b)
		f.Add(b[meta : meta+512])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p := make([]byte, metaTabSize)
		copy(p, b)
		copy(p, "metadata")
		parseMetadataTable(p)
	})
}

func FuzzParentLocator(f *testing.F) {
	f.Add(ParentLocator([][2]string{{"parent_linkage", "{01234567-89ab-cdef-0123-456789abcdef}"}, {"relative_path", `..\p.vhdx`}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseParentLocator(b)
		if len(b) >= 16 {
			b = bytes.Clone(b)
			copy(b, parentTypeVHDX[:])
			parseParentLocator(b)
		}
	})
}

func regionsOf(b []byte) (bat, meta int64) { return Regions(b) }
