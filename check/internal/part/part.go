// Package part reads a disk's partition table: the MBR with its chain of
// extended boot records, or the GPT. It never fails: what it cannot read
// becomes a Problem of the Table, for the check's part.table rule.
package part

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"vmimport/check/internal/guestfs"
)

const SectorSize = 512

// Bounds of what the partition table reader walks.
const (
	maxLogical   = 128  // logical partitions in an extended partition
	maxGPTParts  = 1024 // GPT entries read
	maxGPTEntryB = 4096 // size of one GPT entry
)

// GPT partition type of the EFI system partition.
const ESPGUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"

// Table is what the partition table reader learnt.
type Table struct {
	Kind     string // "mbr", "gpt", "none"
	DiskID   uint32 // MBR disk signature
	BootCode bool   // the MBR's first 440 bytes are not all zero
	Hybrid   bool   // a GPT header behind an MBR without a 0xEE entry
	Parts    []Entry
	// GPTUnique maps partition index to the GPT unique partition GUID.
	GPTUnique map[int]string
	// Problems are broken structures, as messages for part.table.
	Problems []Problem
}

// Problem is a broken structure: what is wrong, and where.
type Problem struct {
	Msg string
	Off int64
}

// Entry is one partition of the table.
type Entry struct {
	Index   int    // 1..4 primary, 5.. logical; the GPT entry's number
	Start   int64  // bytes
	Size    int64  // bytes
	Type    string // MBR type byte as "0x83", or GPT type GUID
	Active  bool
	Logical bool
	Label   string // GPT partition name
}

func (t *Table) problem(off int64, format string, args ...any) {
	t.Problems = append(t.Problems, Problem{fmt.Sprintf(format, args...), off})
}

// mbrEntry is one 16-byte entry of an MBR or EBR.
type mbrEntry struct {
	status byte
	typ    byte
	lba    uint32
	count  uint32
}

func parseMBREntries(sec []byte) [4]mbrEntry {
	var e [4]mbrEntry
	for i := range 4 {
		b := sec[446+16*i : 446+16*(i+1)]
		e[i] = mbrEntry{status: b[0], typ: b[4], lba: binary.LittleEndian.Uint32(b[8:]), count: binary.LittleEndian.Uint32(b[12:])}
	}
	return e
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

// IsExtended reports whether an MBR type ("0x05") marks an extended
// partition, a container of logical ones.
func IsExtended(typ string) bool {
	var b byte
	_, err := fmt.Sscanf(typ, "0x%02x", &b)
	return err == nil && len(typ) == 4 && isExtended(b)
}

// Read reads the MBR (with its extended partitions) or the GPT of
// a disk of the given size. It never fails: what it cannot read becomes a
// problem in the table.
func Read(d io.ReaderAt, size int64) *Table {
	t := &Table{Kind: "none"}
	sec := make([]byte, SectorSize)
	if err := guestfs.ReadFull(d, sec, 0, size); err != nil {
		t.problem(0, "the disk is too small for a partition table (%v)", err)
		return t
	}
	gptAt := findGPTHeader(d, size)
	if sec[510] != 0x55 || sec[511] != 0xaa {
		if gptAt > 0 {
			t.Kind = "gpt"
			t.readGPT(d, size, gptAt)
			return t
		}
		t.problem(510, "no MBR partition table: the boot signature 0x55AA at offset 510 is missing")
		return t
	}
	if guestfs.IsBootSector(sec) {
		t.problem(0, "sector 0 is a file system's boot sector, not a partition table: the disk is not partitioned")
		return t
	}
	t.DiskID = binary.LittleEndian.Uint32(sec[440:])
	for _, b := range sec[:440] {
		if b != 0 {
			t.BootCode = true
			break
		}
	}
	entries := parseMBREntries(sec)
	protective := false
	for _, e := range entries {
		if e.typ == 0xee {
			protective = true
		}
	}
	if protective || gptAt > 0 {
		t.Kind = "gpt"
		t.Hybrid = !protective
		if gptAt > 0 {
			t.readGPT(d, size, gptAt)
		} else {
			t.problem(446, "a protective MBR (type 0xEE) without a readable GPT header")
		}
		return t
	}
	t.Kind = "mbr"
	for i, e := range entries {
		off := int64(446 + 16*i)
		if e.status != 0 && e.status != 0x80 {
			t.problem(off, "MBR entry %d has the invalid status byte 0x%02x (only 0x00 and 0x80 are valid)", i+1, e.status)
		}
		if e.typ == 0 || e.count == 0 {
			continue
		}
		p := Entry{Index: i + 1, Start: int64(e.lba) * SectorSize, Size: int64(e.count) * SectorSize,
			Type: fmt.Sprintf("0x%02x", e.typ), Active: e.status == 0x80}
		t.Parts = append(t.Parts, p)
		if isExtended(e.typ) {
			t.readLogical(d, size, int64(e.lba))
		}
	}
	return t
}

// readLogical walks the chain of extended boot records from the extended
// partition at sector ext.
func (t *Table) readLogical(d io.ReaderAt, size int64, ext int64) {
	sec := make([]byte, SectorSize)
	seen := map[int64]bool{}
	ebr := ext
	for n := 0; ; n++ {
		if n >= maxLogical {
			t.problem(ebr*SectorSize, "more than %d logical partitions: the chain of extended boot records was not followed further", maxLogical)
			return
		}
		if seen[ebr] {
			t.problem(ebr*SectorSize, "the chain of extended boot records loops back to sector %d", ebr)
			return
		}
		seen[ebr] = true
		off := ebr * SectorSize
		if err := guestfs.ReadFull(d, sec, off, size); err != nil {
			t.problem(off, "extended boot record at sector %d cannot be read: %v", ebr, err)
			return
		}
		if sec[510] != 0x55 || sec[511] != 0xaa {
			t.problem(off+510, "extended boot record at sector %d has no 0x55AA signature", ebr)
			return
		}
		e := parseMBREntries(sec)
		if e[0].typ != 0 && e[0].count != 0 {
			t.Parts = append(t.Parts, Entry{Index: 5 + n, Start: (ebr + int64(e[0].lba)) * SectorSize,
				Size: int64(e[0].count) * SectorSize, Type: fmt.Sprintf("0x%02x", e[0].typ),
				Active: e[0].status == 0x80, Logical: true})
		}
		if e[1].typ == 0 || e[1].lba == 0 {
			return
		}
		ebr = ext + int64(e[1].lba)
	}
}

// findGPTHeader returns the offset of a GPT header ("EFI PART") at LBA 1
// for 512- or 4096-byte sectors, or 0.
func findGPTHeader(d io.ReaderAt, size int64) int64 {
	sig := make([]byte, 8)
	for _, off := range []int64{512, 4096} {
		if guestfs.ReadFull(d, sig, off, size) == nil && string(sig) == "EFI PART" {
			return off
		}
	}
	return 0
}

func (t *Table) readGPT(d io.ReaderAt, size, hdrOff int64) {
	lba := hdrOff // the logical block size equals the header's LBA 1 offset
	h := make([]byte, 92)
	if err := guestfs.ReadFull(d, h, hdrOff, size); err != nil {
		t.problem(hdrOff, "GPT header cannot be read: %v", err)
		return
	}
	entriesLBA := binary.LittleEndian.Uint64(h[72:])
	count := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if esize < 128 || esize > maxGPTEntryB || esize%8 != 0 {
		t.problem(hdrOff+84, "GPT entry size %d is invalid", esize)
		return
	}
	if count > maxGPTParts {
		t.problem(hdrOff+80, "GPT claims %d entries; only the first %d are read", count, maxGPTParts)
		count = maxGPTParts
	}
	if entriesLBA == 0 || entriesLBA > uint64(size/lba) {
		t.problem(hdrOff+72, "GPT entries start at LBA %d, outside the disk", entriesLBA)
		return
	}
	base := int64(entriesLBA) * lba
	e := make([]byte, esize)
	t.GPTUnique = map[int]string{}
	for i := range int64(count) {
		if err := guestfs.ReadFull(d, e, base+i*int64(esize), size); err != nil {
			t.problem(base+i*int64(esize), "GPT entry %d cannot be read: %v", i+1, err)
			return
		}
		typ := guidString(e[0:16])
		if typ == "00000000-0000-0000-0000-000000000000" {
			continue
		}
		first := binary.LittleEndian.Uint64(e[32:])
		last := binary.LittleEndian.Uint64(e[40:])
		if last < first || last-first >= 1<<42 {
			t.problem(base+i*int64(esize), "GPT entry %d has the invalid range %d..%d", i+1, first, last)
			continue
		}
		idx := int(i) + 1
		t.Parts = append(t.Parts, Entry{Index: idx, Start: int64(first) * lba, Size: int64(last-first+1) * lba, Type: typ, Label: utf16Name(e[56:128])})
		t.GPTUnique[idx] = guidString(e[16:32])
	}
}

// guidString formats a GUID stored in the mixed-endian on-disk form.
func guidString(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.ToValidUTF8(string(utf16.Decode(u)), "?")
}
