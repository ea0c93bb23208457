package vhdx

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf16"
)

// Structures of MS-VHDX ("Virtual Hard Disk v2 (VHDX) File Format", v20160714).
// Every integer is little-endian; GUIDs are stored as Windows does (the
// first three groups little-endian).

const (
	mib = 1 << 20

	fileIDOffset = 0
	header1Off   = 64 << 10
	header2Off   = 128 << 10
	headerSize   = 4 << 10
	region1Off   = 192 << 10
	region2Off   = 256 << 10
	regionSize   = 64 << 10
	metaTabSize  = 64 << 10
	maxEntries   = 2047

	minBlockSize = 1 << 20
	maxBlockSize = 256 << 20
	// sectorsPerChunk is 2^23: one sector bitmap block (1 MiB) has a bit
	// for each sector of a chunk.
	sectorsPerChunk = 1 << 23
)

// Payload and sector bitmap block states (BAT entry bits 0-2).
const (
	stateNotPresent   = 0
	stateUndefined    = 1
	stateZero         = 2
	stateUnmapped     = 3
	stateUnmappedV095 = 5 // the value of "unmapped" in drafts before 1.0; qemu reads it as zero
	stateFullyPresent = 6
	statePartial      = 7

	bitmapPresent = 6
)

type guid [16]byte

func (g guid) String() string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(g[0:]), le.Uint16(g[4:]), le.Uint16(g[6:]), g[8:10], g[10:])
}

func (g guid) zero() bool { return g == guid{} }

// mustGUID turns "2DC27766-F623-4200-9D64-115E9BFD4A08" into its on-disk form.
func mustGUID(s string) guid {
	var g guid
	var d1 uint32
	var d2, d3 uint16
	var d4 [8]byte
	if _, err := fmt.Sscanf(s, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", &d1, &d2, &d3,
		&d4[0], &d4[1], &d4[2], &d4[3], &d4[4], &d4[5], &d4[6], &d4[7]); err != nil {
		panic(err)
	}
	le := binary.LittleEndian
	le.PutUint32(g[0:], d1)
	le.PutUint16(g[4:], d2)
	le.PutUint16(g[6:], d3)
	copy(g[8:], d4[:])
	return g
}

var (
	regionBAT      = mustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	regionMetadata = mustGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

	metaFileParams   = mustGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	metaVirtualSize  = mustGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	metaDiskID       = mustGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	metaLogicalSect  = mustGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	metaPhysicalSect = mustGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
	metaParentLoc    = mustGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

	parentTypeVHDX = mustGUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc is the CRC-32C of b with the 4-byte checksum field at sumAt taken as
// zero.
func crc(b []byte, sumAt int) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, b[:sumAt])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, b[sumAt+4:])
}

// header is one of the two VHDX headers.
type header struct {
	Seq           uint64
	FileWriteGUID guid
	DataWriteGUID guid
	LogGUID       guid
	LogVersion    uint16
	Version       uint16
	LogLength     uint32
	LogOffset     uint64
}

// parseHeader decodes a 4 KiB header; it returns the offset inside it and
// the rule broken, if any.
func parseHeader(b []byte) (*header, int, string) {
	if len(b) < headerSize {
		return nil, 0, "header shorter than 4 KiB"
	}
	if string(b[:4]) != "head" {
		return nil, 0, "header signature is not \"head\""
	}
	le := binary.LittleEndian
	if want, got := le.Uint32(b[4:]), crc(b[:headerSize], 4); want != got {
		return nil, 4, fmt.Sprintf("header checksum 0x%08x does not match the computed CRC-32C 0x%08x (bad checksum)", want, got)
	}
	h := &header{
		Seq:        le.Uint64(b[8:]),
		LogVersion: le.Uint16(b[64:]),
		Version:    le.Uint16(b[66:]),
		LogLength:  le.Uint32(b[68:]),
		LogOffset:  le.Uint64(b[72:]),
	}
	copy(h.FileWriteGUID[:], b[16:])
	copy(h.DataWriteGUID[:], b[32:])
	copy(h.LogGUID[:], b[48:])
	if h.Version != 1 {
		return nil, 66, fmt.Sprintf("header version %d is not 1", h.Version)
	}
	return h, 0, ""
}

type regionEntry struct {
	GUID     guid
	Offset   uint64
	Length   uint32
	Required bool
}

// parseRegionTable decodes a 64 KiB region table.
func parseRegionTable(b []byte) ([]regionEntry, int, string) {
	if len(b) < regionSize {
		return nil, 0, "region table shorter than 64 KiB"
	}
	if string(b[:4]) != "regi" {
		return nil, 0, "region table signature is not \"regi\""
	}
	le := binary.LittleEndian
	if want, got := le.Uint32(b[4:]), crc(b[:regionSize], 4); want != got {
		return nil, 4, fmt.Sprintf("region table checksum 0x%08x does not match the computed CRC-32C 0x%08x (bad checksum)", want, got)
	}
	n := le.Uint32(b[8:])
	if n > maxEntries {
		return nil, 8, fmt.Sprintf("region table holds %d entries, more than %d", n, maxEntries)
	}
	es := make([]regionEntry, n)
	for i := range es {
		e := b[16+32*i:]
		copy(es[i].GUID[:], e)
		es[i].Offset = le.Uint64(e[16:])
		es[i].Length = le.Uint32(e[24:])
		es[i].Required = le.Uint32(e[28:])&1 != 0
	}
	return es, 0, ""
}

type metaEntry struct {
	ID       guid
	Offset   uint32
	Length   uint32
	User     bool
	Required bool
}

// parseMetadataTable decodes the 64 KiB table at the start of the
// metadata region.
func parseMetadataTable(b []byte) ([]metaEntry, int, string) {
	if len(b) < metaTabSize {
		return nil, 0, "metadata table shorter than 64 KiB"
	}
	if string(b[:8]) != "metadata" {
		return nil, 0, "metadata table signature is not \"metadata\""
	}
	le := binary.LittleEndian
	n := le.Uint16(b[10:])
	if n > maxEntries {
		return nil, 10, fmt.Sprintf("metadata table holds %d entries, more than %d", n, maxEntries)
	}
	es := make([]metaEntry, n)
	for i := range es {
		e := b[32+32*i:]
		copy(es[i].ID[:], e)
		es[i].Offset = le.Uint32(e[16:])
		es[i].Length = le.Uint32(e[20:])
		f := le.Uint32(e[24:])
		es[i].User = f&1 != 0
		es[i].Required = f&4 != 0
	}
	return es, 0, ""
}

// logEntryHeader is the first 64 bytes of a log entry.
type logEntryHeader struct {
	Checksum    uint32
	EntryLength uint32
	Tail        uint32
	Seq         uint64
	Descriptors uint32
	LogGUID     guid
}

func parseLogEntryHeader(b []byte) (*logEntryHeader, bool) {
	if len(b) < 64 || string(b[:4]) != "loge" {
		return nil, false
	}
	le := binary.LittleEndian
	h := &logEntryHeader{
		Checksum:    le.Uint32(b[4:]),
		EntryLength: le.Uint32(b[8:]),
		Tail:        le.Uint32(b[12:]),
		Seq:         le.Uint64(b[16:]),
		Descriptors: le.Uint32(b[24:]),
	}
	copy(h.LogGUID[:], b[32:])
	return h, true
}

// parentLocator is the key-value list of a differencing disk's parent
// locator metadata item.
type parentLocator map[string]string

func parseParentLocator(b []byte) (parentLocator, string) {
	if len(b) < 20 {
		return nil, "parent locator shorter than its 20-byte header"
	}
	var t guid
	copy(t[:], b)
	if t != parentTypeVHDX {
		return nil, fmt.Sprintf("parent locator type %s is not the VHDX one", t)
	}
	le := binary.LittleEndian
	n := int(le.Uint16(b[18:]))
	if 20+12*n > len(b) {
		return nil, fmt.Sprintf("parent locator of %d bytes cannot hold %d entries", len(b), n)
	}
	str := func(off uint32, l uint16) (string, bool) {
		if uint64(off)+uint64(l) > uint64(len(b)) || l%2 != 0 {
			return "", false
		}
		u := make([]uint16, l/2)
		for i := range u {
			u[i] = le.Uint16(b[int(off)+2*i:])
		}
		return string(utf16.Decode(u)), true
	}
	loc := parentLocator{}
	for i := range n {
		e := b[20+12*i:]
		k, ok1 := str(le.Uint32(e[0:]), le.Uint16(e[8:]))
		v, ok2 := str(le.Uint32(e[4:]), le.Uint16(e[10:]))
		if !ok1 || !ok2 {
			return nil, fmt.Sprintf("parent locator entry %d lies outside the item", i)
		}
		loc[k] = v
	}
	return loc, ""
}

func utf16LE(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.TrimSpace(string(utf16.Decode(u)))
}
