package vhdx

import (
	"encoding/binary"
	"unicode/utf16"
)

// Helpers for tests that damage, repair and extend qemu-made images.

var (
	MetaFileParams  = metaFileParams
	MetaVirtualSize = metaVirtualSize
	MetaLogicalSect = metaLogicalSect
	MetaParentLoc   = metaParentLoc
)

// Regions returns the file offsets of the BAT and metadata regions named
// by the primary region table.
func Regions(b []byte) (bat, meta int64) {
	es, _, rule := parseRegionTable(b[region1Off:])
	if rule != "" {
		panic(rule)
	}
	for _, e := range es {
		switch e.GUID {
		case regionBAT:
			bat = int64(e.Offset)
		case regionMetadata:
			meta = int64(e.Offset)
		}
	}
	return bat, meta
}

// SetBATOffset moves the BAT region's entry in both region tables to off
// and fixes their checksums.
func SetBATOffset(b []byte, off uint64) {
	le := binary.LittleEndian
	for _, t := range []int{region1Off, region2Off} {
		tab := b[t : t+regionSize]
		n := int(le.Uint32(tab[8:]))
		for i := range n {
			e := tab[16+32*i:]
			var g guid
			copy(g[:], e)
			if g == regionBAT {
				le.PutUint64(e[16:], off)
			}
		}
		le.PutUint32(tab[4:], crc(tab, 4))
	}
}

// MetaItem returns the file offset of a metadata item.
func MetaItem(b []byte, id guid) int64 {
	_, meta := Regions(b)
	es, _, rule := parseMetadataTable(b[meta:])
	if rule != "" {
		panic(rule)
	}
	for _, e := range es {
		if e.ID == id {
			return meta + int64(e.Offset)
		}
	}
	panic("no such item")
}

// AddMetaItem appends an item to the metadata table, its data at offset
// at of the metadata region.
func AddMetaItem(b []byte, id guid, at uint32, data []byte, required bool) {
	_, meta := Regions(b)
	le := binary.LittleEndian
	n := le.Uint16(b[meta+10:])
	e := b[meta+32+32*int64(n):]
	copy(e, id[:])
	le.PutUint32(e[16:], at)
	le.PutUint32(e[20:], uint32(len(data)))
	var flags uint32 = 2 // IsVirtualDisk
	if required {
		flags |= 4
	}
	le.PutUint32(e[24:], flags)
	le.PutUint16(b[meta+10:], n+1)
	copy(b[meta+int64(at):], data)
}

// FixHeaders recomputes the CRC-32C of both headers.
func FixHeaders(b []byte) {
	for _, off := range []int{header1Off, header2Off} {
		h := b[off : off+headerSize]
		binary.LittleEndian.PutUint32(h[4:], crc(h, 4))
	}
}

// FixRegions recomputes the CRC-32C of both region tables.
func FixRegions(b []byte) {
	for _, off := range []int{region1Off, region2Off} {
		h := b[off : off+regionSize]
		binary.LittleEndian.PutUint32(h[4:], crc(h, 4))
	}
}

// CurrentHeader returns the file offset of the header in use.
func CurrentHeader(b []byte) int64 {
	h1, _, r1 := parseHeader(b[header1Off:])
	h2, _, r2 := parseHeader(b[header2Off:])
	if r1 != "" || (r2 == "" && h2.Seq > h1.Seq) {
		return header2Off
	}
	return header1Off
}

// DataWriteGUID is the current header's data write GUID as text.
func DataWriteGUID(b []byte) string {
	h, _, _ := parseHeader(b[CurrentHeader(b):])
	return h.DataWriteGUID.String()
}

// LogEntry builds a valid 4 KiB log entry with no descriptors.
func LogEntry(logGUID [16]byte, seq uint64) []byte {
	e := make([]byte, 4096)
	le := binary.LittleEndian
	copy(e, "loge")
	le.PutUint32(e[8:], 4096)
	le.PutUint64(e[16:], seq)
	copy(e[32:], logGUID[:])
	le.PutUint32(e[4:], crc(e, 4))
	return e
}

// ParentLocator encodes a VHDX parent locator item.
func ParentLocator(kv [][2]string) []byte {
	enc := func(s string) []byte {
		u := utf16.Encode([]rune(s))
		out := make([]byte, 2*len(u))
		for i, c := range u {
			binary.LittleEndian.PutUint16(out[2*i:], c)
		}
		return out
	}
	le := binary.LittleEndian
	head := make([]byte, 20+12*len(kv))
	copy(head, parentTypeVHDX[:])
	le.PutUint16(head[18:], uint16(len(kv)))
	var data []byte
	for i, p := range kv {
		k, v := enc(p[0]), enc(p[1])
		e := head[20+12*i:]
		le.PutUint32(e[0:], uint32(len(head)+len(data)))
		le.PutUint16(e[8:], uint16(len(k)))
		data = append(data, k...)
		le.PutUint32(e[4:], uint32(len(head)+len(data)))
		le.PutUint16(e[10:], uint16(len(v)))
		data = append(data, v...)
	}
	return append(head, data...)
}

// Desc is one write of a test log entry: Zero bytes at FileOffset, or the
// 4 KiB Page.
type Desc struct {
	Zero       bool
	FileOffset int64
	Length     int64
	Page       []byte
}

// LogEntryWith builds a valid log entry with descriptors and their data
// sectors.
func LogEntryWith(logGUID [16]byte, seq uint64, tail uint32, flushed, last uint64, descs ...Desc) []byte {
	le := binary.LittleEndian
	head := (64 + 32*len(descs) + 4095) / 4096 * 4096
	e := make([]byte, head)
	copy(e, "loge")
	le.PutUint32(e[12:], tail)
	le.PutUint64(e[16:], seq)
	le.PutUint32(e[24:], uint32(len(descs)))
	copy(e[32:], logGUID[:])
	le.PutUint64(e[48:], flushed)
	le.PutUint64(e[56:], last)
	for i, d := range descs {
		p := e[64+32*i:]
		le.PutUint64(p[16:], uint64(d.FileOffset))
		le.PutUint64(p[24:], seq)
		if d.Zero {
			copy(p, "zero")
			le.PutUint64(p[8:], uint64(d.Length))
			continue
		}
		copy(p, "desc")
		copy(p[4:8], d.Page[4092:])
		copy(p[8:16], d.Page[:8])
		s := make([]byte, 4096)
		copy(s, "data")
		le.PutUint32(s[4:], uint32(seq>>32))
		copy(s[8:4092], d.Page[8:4092])
		le.PutUint32(s[4092:], uint32(seq))
		e = append(e, s...)
	}
	le.PutUint32(e[8:], uint32(len(e)))
	le.PutUint32(e[4:], crc(e, 4))
	return e
}
