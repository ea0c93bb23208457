package vhd

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"unicode/utf16"
)

// Structures of Microsoft's "Virtual Hard Disk Image Format Specification"
// (version 1.0, 2006). Every integer is big-endian.

const (
	footerSize    = 512
	dynHeaderSize = 1024

	typeFixed        = 2
	typeDynamic      = 3
	typeDifferencing = 4

	batUnused = 0xFFFFFFFF

	// maxSectors is the largest disk qemu opens: 0xff000000 sectors
	// (2040 GiB), the VHD format's own limit.
	maxSectors = 0xff000000
	// maxGeometry is the largest CHS geometry (65535 x 16 x 255): a disk
	// this large is sized by its current size whoever made it.
	maxGeometry = 65535 * 16 * 255

	minBlockSize = 512
	maxBlockSize = 256 << 20
)

// footer is the hard disk footer, the last 512 bytes of every VHD file and,
// for dynamic and differencing disks, also the first 512.
type footer struct {
	Features       uint32
	Version        uint32
	DataOffset     uint64
	Timestamp      uint32
	CreatorApp     [4]byte
	CreatorVersion uint32
	CreatorOS      [4]byte
	OriginalSize   uint64
	CurrentSize    uint64
	Cylinders      uint16
	Heads          uint8
	SectorsPerCyl  uint8
	DiskType       uint32
	Checksum       uint32
	UUID           [16]byte
	SavedState     uint8
}

// checksum is the one's complement of the sum of all bytes, the checksum
// field (4 bytes at sumAt) taken as zero.
func checksum(b []byte, sumAt int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= sumAt && i < sumAt+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

// parseFooter decodes a 512-byte footer. It returns a rule broken, or "".
// The offset of the broken rule inside the footer comes back too.
func parseFooter(b []byte) (*footer, int, string) {
	if len(b) < footerSize {
		return nil, 0, "footer is shorter than 512 bytes"
	}
	if string(b[:8]) != "conectix" {
		return nil, 0, "footer cookie is not \"conectix\""
	}
	be := binary.BigEndian
	f := &footer{
		Features:       be.Uint32(b[8:]),
		Version:        be.Uint32(b[12:]),
		DataOffset:     be.Uint64(b[16:]),
		Timestamp:      be.Uint32(b[24:]),
		CreatorVersion: be.Uint32(b[32:]),
		OriginalSize:   be.Uint64(b[40:]),
		CurrentSize:    be.Uint64(b[48:]),
		Cylinders:      be.Uint16(b[56:]),
		Heads:          b[58],
		SectorsPerCyl:  b[59],
		DiskType:       be.Uint32(b[60:]),
		Checksum:       be.Uint32(b[64:]),
		SavedState:     b[84],
	}
	copy(f.CreatorApp[:], b[28:32])
	copy(f.CreatorOS[:], b[36:40])
	copy(f.UUID[:], b[68:84])
	if sum := checksum(b[:footerSize], 64); sum != f.Checksum {
		return f, 64, fmt.Sprintf("footer checksum 0x%08x does not match the computed 0x%08x (bad checksum)", f.Checksum, sum)
	}
	switch f.DiskType {
	case typeFixed, typeDynamic, typeDifferencing:
	default:
		return f, 60, fmt.Sprintf("disk type %d is none of fixed (2), dynamic (3), differencing (4)", f.DiskType)
	}
	return f, 0, ""
}

// ignoresCurrentSize reports whether the disk is sized by its CHS geometry
// rather than its current size field. This is qemu's rule since 10.0
// (commit "vpc: Read images exported from Azure correctly"): only Virtual PC
// ("vpc ") and old qemu ("qemu", written without force_size) size a disk by
// its geometry; every other creator (Hyper-V "win ", Disk2vhd "d2v ",
// qemu's force_size "qem2", XenServer "tap\0", XenConverter "CTXS", Azure
// "wa\0\0", VirtualBox "vbox", ...) by the current size. Older qemu (up to
// 9.2) used the geometry for unknown creators too; for the creators it knew
// both rules agree.
func (f *footer) ignoresCurrentSize() bool {
	app := string(f.CreatorApp[:])
	return app == "vpc " || app == "qemu"
}

// geometrySectors is cylinders x heads x sectors per track.
func (f *footer) geometrySectors() int64 {
	return int64(f.Cylinders) * int64(f.Heads) * int64(f.SectorsPerCyl)
}

// virtualSize applies qemu's rule: the CHS geometry for Virtual PC and old
// qemu images unless the geometry is the largest possible one, the current
// size (rounded down to a sector) otherwise. It says which rule it used.
func (f *footer) virtualSize() (int64, string) {
	chs := f.geometrySectors()
	if f.ignoresCurrentSize() && chs != maxGeometry {
		return chs * 512, "CHS geometry"
	}
	if f.CurrentSize > 1<<62 {
		return 1 << 62, "current size"
	}
	return int64(f.CurrentSize) / 512 * 512, "current size"
}

func (f *footer) diskTypeName() string {
	switch f.DiskType {
	case typeFixed:
		return "fixed"
	case typeDynamic:
		return "dynamic"
	case typeDifferencing:
		return "differencing"
	}
	return fmt.Sprintf("type %d", f.DiskType)
}

// locator is one parent locator entry of a differencing disk.
type locator struct {
	Code       [4]byte
	DataSpace  uint32 // in sectors per the spec; some writers put bytes
	DataLength uint32
	DataOffset uint64
}

// dynHeader is the dynamic disk header of dynamic and differencing disks.
type dynHeader struct {
	DataOffset      uint64
	TableOffset     uint64
	HeaderVersion   uint32
	MaxTableEntries uint32
	BlockSize       uint32
	Checksum        uint32
	ParentUUID      [16]byte
	ParentTimestamp uint32
	ParentName      string
	Locators        [8]locator
}

// parseDynHeader decodes a 1024-byte dynamic disk header, returning the
// offset inside it and the rule broken, if any.
func parseDynHeader(b []byte) (*dynHeader, int, string) {
	if len(b) < dynHeaderSize {
		return nil, 0, "dynamic disk header is shorter than 1024 bytes"
	}
	if string(b[:8]) != "cxsparse" {
		return nil, 0, "dynamic disk header cookie is not \"cxsparse\""
	}
	be := binary.BigEndian
	h := &dynHeader{
		DataOffset:      be.Uint64(b[8:]),
		TableOffset:     be.Uint64(b[16:]),
		HeaderVersion:   be.Uint32(b[24:]),
		MaxTableEntries: be.Uint32(b[28:]),
		BlockSize:       be.Uint32(b[32:]),
		Checksum:        be.Uint32(b[36:]),
		ParentTimestamp: be.Uint32(b[56:]),
		ParentName:      utf16String(b[64:576], true),
	}
	copy(h.ParentUUID[:], b[40:56])
	for i := range h.Locators {
		e := b[576+24*i:]
		l := &h.Locators[i]
		copy(l.Code[:], e[:4])
		l.DataSpace = be.Uint32(e[4:])
		l.DataLength = be.Uint32(e[8:])
		l.DataOffset = be.Uint64(e[16:])
	}
	if sum := checksum(b[:dynHeaderSize], 36); sum != h.Checksum {
		return h, 36, fmt.Sprintf("dynamic disk header checksum 0x%08x does not match the computed 0x%08x (bad checksum)", h.Checksum, sum)
	}
	if bs := h.BlockSize; bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return h, 32, fmt.Sprintf("block size %d is not a power of two from 512 bytes to 256 MiB", bs)
	}
	return h, 0, ""
}

// bitmapSize is the size of the sector bitmap in front of every block:
// one bit per sector, padded to a whole sector.
func (h *dynHeader) bitmapSize() int64 {
	bytes := (int64(h.BlockSize)/512 + 7) / 8
	return (bytes + 511) / 512 * 512
}

// utf16String decodes UTF-16 up to the first NUL.
func utf16String(b []byte, bigEndian bool) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		var c uint16
		if bigEndian {
			c = binary.BigEndian.Uint16(b[i:])
		} else {
			c = binary.LittleEndian.Uint16(b[i:])
		}
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// uuidString formats a VHD UUID (stored as plain big-endian bytes).
func uuidString(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func printable(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	var s []byte
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			s = fmt.Appendf(s, "\\x%02x", c)
		} else {
			s = append(s, c)
		}
	}
	return string(s)
}

func hostOS(b [4]byte) string {
	switch string(b[:]) {
	case "Wi2k":
		return "Windows"
	case "Mac ":
		return "Macintosh"
	}
	return printable(b[:])
}
