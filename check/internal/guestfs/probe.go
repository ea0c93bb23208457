package guestfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Info is what a partition's superblock says.
type Info struct {
	Type  string // ext2, ext3, ext4, xfs, ntfs, bitlocker, vfat, exfat, swap, lvm2, luks, btrfs, md, iso9660; "" unknown
	UUID  string
	Label string
	// Used and Inodes are percentages; -1 when the superblock does not
	// tell.
	Used, Inodes float64
	// Magic is the offset of the magic bytes in the partition.
	Magic int64
	// Dirty says why the file system is not clean, if it is not.
	Dirty string
}

// probeHead is how much of a partition's start probe reads: enough for the
// btrfs superblock at 64 KiB and the ISO 9660 descriptor at 32 KiB.
const probeHead = 68 << 10

const mdMagic = 0xa92b4efc

// probe identifies the file system or volume format of the size bytes of r
// by their superblock.
func Probe(r io.ReaderAt, size int64) Info {
	if size <= 0 {
		return Info{Used: -1, Inodes: -1}
	}
	head := make([]byte, min(size, probeHead))
	n, _ := r.ReadAt(head, 0)
	head = head[:n]
	if size >= 128<<10 {
		// md RAID 0.90 and 1.0 keep their superblock near the end.
		for _, off := range []int64{(size &^ (64<<10 - 1)) - 64<<10, (size - 8<<10) &^ (4<<10 - 1)} {
			b := make([]byte, 4)
			if off > 0 && ReadFull(r, b, off, size) == nil && binary.LittleEndian.Uint32(b) == mdMagic {
				return Info{Type: "md", Used: -1, Inodes: -1, Magic: off}
			}
		}
	}
	return ProbeBytes(head)
}

// ProbeBytes identifies a file system from the first bytes of its
// partition. It reads every field within bounds: any input is safe.
func ProbeBytes(b []byte) Info {
	f := Info{Used: -1, Inodes: -1}
	has := func(off int, magic string) bool {
		return off >= 0 && off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
	}
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
	switch {
	case has(0, "LUKS\xba\xbe"):
		f.Type = "luks"
		if len(b) >= 168+40 {
			f.UUID = cstring(b[168 : 168+40])
		}
		return f
	case has(0, "XFSB"):
		return probeXFS(b)
	}
	for s := 0; s < 4; s++ {
		if has(s*512, "LABELONE") && has(s*512+24, "LVM2 001") {
			f.Type, f.Magic = "lvm2", int64(s*512)
			return f
		}
	}
	for _, off := range []int{0, 4096} {
		if off+4 <= len(b) && le32(off) == mdMagic {
			f.Type, f.Magic = "md", int64(off)
			return f
		}
	}
	if len(b) >= 2048 && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xef53 {
		if sb, err := parseExtSuper(b[1024:2048]); err == nil {
			return sb.info()
		}
	}
	if has(0x10040, "_BHRfS_M") {
		f.Type, f.Magic = "btrfs", 0x10040
		if len(b) >= 0x10000+0x20+16 {
			f.UUID = uuidString(b[0x10020:0x10030])
		}
		return f
	}
	if has(3, "-FVE-FS-") {
		// A BitLocker volume: its boot sector replaces NTFS's OEM id.
		f.Type, f.Magic = "bitlocker", 3
		return f
	}
	if len(b) >= 512 && IsBootSector(b[:512]) {
		switch {
		case has(3, "NTFS    "):
			f.Type = "ntfs"
			f.UUID = fmt.Sprintf("%016X", binary.LittleEndian.Uint64(b[0x48:]))
		case has(3, "EXFAT   "):
			f.Type = "exfat"
		case has(82, "FAT32"):
			f.Type = "vfat"
			id := le32(0x43)
			f.UUID = fmt.Sprintf("%04X-%04X", id>>16, id&0xffff)
			f.Label = strings.TrimRight(string(b[0x47:0x47+11]), " \x00")
		default:
			f.Type = "vfat"
			id := le32(0x27)
			f.UUID = fmt.Sprintf("%04X-%04X", id>>16, id&0xffff)
			f.Label = strings.TrimRight(string(b[0x2b:0x2b+11]), " \x00")
		}
		if f.Label == "NO NAME" {
			f.Label = ""
		}
		return f
	}
	for _, page := range []int{4096, 8192, 16384, 65536} {
		if has(page-10, "SWAPSPACE2") || has(page-10, "SWAP-SPACE") {
			f.Type, f.Magic = "swap", int64(page-10)
			if len(b) >= 1024+0x2c {
				f.UUID = uuidString(b[1024+0xc : 1024+0x1c])
				f.Label = cstring(b[1024+0x1c : 1024+0x2c])
			}
			return f
		}
	}
	if has(0x8001, "CD001") {
		f.Type, f.Magic = "iso9660", 0x8001
	}
	return f
}

func probeXFS(b []byte) Info {
	f := Info{Type: "xfs", Used: -1, Inodes: -1}
	sb, err := parseXFSSuper(b)
	if err != nil {
		return f
	}
	f.UUID, f.Label = sb.uuid, sb.label
	if sb.dblocks > 0 && sb.fdblocks <= sb.dblocks {
		f.Used = 100 * float64(sb.dblocks-sb.fdblocks) / float64(sb.dblocks)
	}
	return f
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "?")
}
