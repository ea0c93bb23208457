package reader

import (
	"bytes"
	"encoding/binary"
)

// A probe recognises a format from the first bytes of a file (head, up to
// headSize) and its last 512 bytes (tail). Probes look at magic numbers only,
// never at file names.
type probe struct {
	name   string // what the user is told: "VHDX", "ISO 9660", ...
	sig    string // what was found, for errors: "\"vhdxfile\" at offset 0"
	detect func(head, tail []byte, size int64) bool
	// open is nil while the format is detected but not yet readable; it
	// then fails with ErrUnsupported naming the format.
	open opener
	// hint says what to do with a detected format we will never read.
	hint string
}

const headSize = 64 << 10

func at(b []byte, off int, magic string) bool {
	return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
}

func isQCOW(version uint32) func(head, tail []byte, size int64) bool {
	return func(head, _ []byte, _ int64) bool {
		if !at(head, 0, "QFI\xfb") {
			return false
		}
		if len(head) < 8 {
			// Too short to say which version: QCOW2 tells it is truncated.
			return version != 1
		}
		v := binary.BigEndian.Uint32(head[4:])
		if version == 1 {
			return v == 1
		}
		return v != 1
	}
}

func isVMDKSparse(head, _ []byte, _ int64) bool {
	return at(head, 0, "KDMV") || at(head, 0, "COWD")
}

// isVMDKDescriptor spots a text descriptor: "# Disk DescriptorFile" or a
// createType line near the start of a small text file.
func isVMDKDescriptor(head, _ []byte, size int64) bool {
	if size > 1<<20 {
		return false
	}
	n := min(len(head), 4096)
	// A descriptor is text, maybe padded with NULs to a sector: look only
	// before the first NUL, so a tar (an OVA) holding a VMDK whose embedded
	// descriptor sits in its first 4 KiB is not taken for one.
	if i := bytes.IndexByte(head[:n], 0); i >= 0 {
		n = i
	}
	if bytes.Contains(head[:n], []byte("# Disk DescriptorFile")) {
		return true
	}
	return bytes.Contains(head[:n], []byte("createType=")) && bytes.Contains(head[:n], []byte("version="))
}

func isVHD(head, tail []byte, _ int64) bool {
	// Dynamic and differencing disks start with a copy of the footer; fixed
	// disks carry it in the last 512 bytes only (some old tools wrote 511).
	return at(head, 0, "conectix") || at(tail, 0, "conectix") || at(tail, 1, "conectix")
}

// isVDI spots the signature at 0x40, or the text banner that starts every
// VDI ("<<< Oracle VM VirtualBox Disk Image >>>", "<<< QEMU VM Virtual Disk
// Image >>>", ...) in a file too short to hold the signature.
func isVDI(head, _ []byte, _ int64) bool {
	if len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f {
		return true
	}
	banner := head[:min(len(head), 0x40)]
	return bytes.HasPrefix(banner, []byte("<<< ")) && bytes.Contains(banner, []byte("Disk Image >>>"))
}

func isParallels(head, _ []byte, _ int64) bool {
	return at(head, 0, "WithoutFreeSpace") || at(head, 0, "WithouFreSpacExt")
}

func isISO(head, _ []byte, _ int64) bool {
	// Volume descriptors start at sector 16 of 2048 bytes.
	return at(head, 0x8001, "CD001") || at(head, 0x8001, "BEA01") || at(head, 0x8001, "NSR02")
}

// isTar spots a ustar header; in a file too short for one (an OVA cut
// short), the name field of the first member, which for an OVA is the
// .ovf descriptor.
func isTar(head, _ []byte, size int64) bool {
	if at(head, 257, "ustar") {
		return true
	}
	if size >= 512 || len(head) == 0 {
		return false
	}
	name := head[:min(len(head), 100)]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		if bytes.Count(name[i:], []byte{0}) != len(name)-i {
			return false
		}
		name = name[:i]
	}
	for _, c := range name {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return len(name) > 4 && bytes.EqualFold(name[len(name)-4:], []byte(".ovf"))
}

func magic(m string) func(head, _ []byte, _ int64) bool {
	return func(head, _ []byte, _ int64) bool { return at(head, 0, m) }
}
