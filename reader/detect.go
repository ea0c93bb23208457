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
func isVMDKDescriptor(head, tail []byte, size int64) bool {
	if isVMDKVersionLine(head, tail, size) {
		return true
	}
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

// probeSize is how much of a file qemu-img looks at to tell its format;
// a shorter file reads as if padded with zeros.
const probeSize = 512

// isVMDKVersionLine is qemu's own test for a VMDK descriptor, whatever the
// file's size: in its first 512 bytes, after comment lines and lines of
// blanks, the first line is "version=1", "version=2" or "version=3".
func isVMDKVersionLine(head, _ []byte, _ int64) bool {
	b := make([]byte, probeSize)
	copy(b, head)
	for p := 0; p < len(b); {
		switch b[p] {
		case '#':
			for p < len(b) && b[p] != '\n' {
				p++
			}
			p++
			continue
		case ' ':
			for p < len(b) && b[p] == ' ' {
				p++
			}
			if p < len(b) && b[p] == '\r' {
				p++
			}
			if p == len(b) || b[p] != '\n' {
				return false
			}
			p++
			continue
		}
		rest := b[p:]
		for _, v := range []string{"version=1", "version=2", "version=3"} {
			if bytes.HasPrefix(rest, []byte(v+"\n")) || bytes.HasPrefix(rest, []byte(v+"\r\n")) {
				return true
			}
		}
		return false
	}
	return false
}

// cloopMagic starts every cloop V2.0 image (qemu's cloop driver).
const cloopMagic = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"

// isDMG spots the UDIF trailer of an Apple disk image: "koly" at the start
// of the last 512 bytes. (qemu-img tells a DMG by its name, *.dmg, and then
// looks for the same trailer.)
func isDMG(_, tail []byte, _ int64) bool {
	return at(tail, 0, "koly")
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
