package qcow2

import (
	"encoding/binary"
	"fmt"
	"math"

	"vmimport/reader/image"
)

// Magic opens every QCOW file: "QFI\xfb".
const Magic = "QFI\xfb"

// Incompatible feature bits (qcow2.txt, "incompatible_features").
const (
	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatExternal    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtendedL2  = 1 << 4
	incompatKnown       = incompatDirty | incompatCorrupt | incompatExternal | incompatCompression | incompatExtendedL2
)

// Header extension types.
const (
	extEnd            = 0x00000000
	extBackingFormat  = 0xe2792aca
	extFeatureTable   = 0x6803f857
	extExternalData   = 0x44415441
	extFullDiskCrypto = 0x0537be77
)

// header holds the fields of the header the reader needs, checked.
type header struct {
	Version             uint32
	BackingFileOffset   uint64
	BackingFileSize     uint32
	ClusterBits         uint32
	Size                uint64
	CryptMethod         uint32
	L1Size              uint32
	L1TableOffset       uint64
	RefcountTableOffset uint64
	RefcountTableClus   uint32
	NbSnapshots         uint32
	SnapshotsOffset     uint64
	// Version 3.
	Incompatible    uint64
	Compatible      uint64
	Autoclear       uint64
	RefcountOrder   uint32
	HeaderLength    uint32
	CompressionType uint8

	BackingFile   string
	BackingFormat string
}

// parseHeader reads and checks the header of a QCOW2 file of fileSize bytes.
// Every offset and count is checked against the file size, so nothing later
// allocates or seeks on the word of an unchecked field.
func parseHeader(src image.Source) (*header, error) {
	path, size := src.Path, src.Size
	bad := func(off int64, rule string, args ...any) error {
		return image.Corruptf(path, "qcow2", off, rule, args...)
	}
	if size < 72 {
		return nil, bad(0, "file is %d bytes, shorter than the 72-byte version 2 header", size)
	}
	buf := make([]byte, min(size, 4096))
	if err := image.ReadFull(src.R, size, buf, 0, path, "qcow2", "header"); err != nil {
		return nil, err
	}
	be := binary.BigEndian
	if string(buf[:4]) != Magic {
		return nil, image.WrongFormat("qcow2", "no QFI\\xfb magic")
	}
	h := &header{
		Version:             be.Uint32(buf[4:]),
		BackingFileOffset:   be.Uint64(buf[8:]),
		BackingFileSize:     be.Uint32(buf[16:]),
		ClusterBits:         be.Uint32(buf[20:]),
		Size:                be.Uint64(buf[24:]),
		CryptMethod:         be.Uint32(buf[32:]),
		L1Size:              be.Uint32(buf[36:]),
		L1TableOffset:       be.Uint64(buf[40:]),
		RefcountTableOffset: be.Uint64(buf[48:]),
		RefcountTableClus:   be.Uint32(buf[56:]),
		NbSnapshots:         be.Uint32(buf[60:]),
		SnapshotsOffset:     be.Uint64(buf[64:]),
		RefcountOrder:       4,
		HeaderLength:        72,
	}
	switch h.Version {
	case 2:
	case 3:
		if len(buf) < 104 {
			return nil, bad(0, "version 3 header needs 104 bytes, the file has %d", len(buf))
		}
		h.Incompatible = be.Uint64(buf[72:])
		h.Compatible = be.Uint64(buf[80:])
		h.Autoclear = be.Uint64(buf[88:])
		h.RefcountOrder = be.Uint32(buf[96:])
		h.HeaderLength = be.Uint32(buf[100:])
		if h.HeaderLength < 104 || h.HeaderLength > uint32(len(buf)) || h.HeaderLength%8 != 0 {
			return nil, bad(100, "header_length %d must be a multiple of 8 from 104 to %d", h.HeaderLength, len(buf))
		}
		if h.HeaderLength > 104 {
			h.CompressionType = buf[104]
		}
	default:
		return nil, image.Unsupportedf(path, "qcow2", 4, "version %d (only QCOW version 2 and 3 are read; version 1 is the old QCOW format)", h.Version)
	}
	if h.ClusterBits < 9 || h.ClusterBits > 21 {
		return nil, bad(20, "cluster_bits %d outside 9..21 (512 B to 2 MiB clusters)", h.ClusterBits)
	}
	clusterSize := int64(1) << h.ClusterBits
	if h.Size > uint64(image.MaxVirtualSize) {
		return nil, bad(24, "virtual size %d exceeds the %d-byte limit", h.Size, image.MaxVirtualSize)
	}
	if h.CryptMethod != 0 {
		return nil, image.Unsupportedf(path, "qcow2", 32, "encrypted image (crypt_method %d): decrypt it with qemu-img first", h.CryptMethod)
	}
	if h.RefcountOrder > 6 {
		return nil, bad(96, "refcount_order %d above 6", h.RefcountOrder)
	}
	if unknown := h.Incompatible &^ incompatKnown; unknown != 0 {
		return nil, image.Unsupportedf(path, "qcow2", 72, "unknown incompatible feature bits %#x", unknown)
	}
	if h.Incompatible&incompatExternal != 0 {
		return nil, image.Unsupportedf(path, "qcow2", 72, "external data file: the guest data lives in another file; merge it with qemu-img convert first")
	}
	if h.Incompatible&incompatCompression != 0 && h.CompressionType > 1 {
		return nil, image.Unsupportedf(path, "qcow2", 104, "compression_type %d (known: 0 zlib, 1 zstd)", h.CompressionType)
	}
	if h.Incompatible&incompatCompression == 0 && h.CompressionType != 0 {
		return nil, bad(104, "compression_type %d set without its incompatible feature bit", h.CompressionType)
	}
	// The L1 table must cover the virtual size and lie inside the file.
	entryBytes := int64(8)
	if h.Incompatible&incompatExtendedL2 != 0 {
		entryBytes = 16
	}
	l2Entries := clusterSize / entryBytes
	need := (int64(h.Size) + clusterSize*l2Entries - 1) / (clusterSize * l2Entries)
	if int64(h.L1Size) < need {
		return nil, bad(36, "l1_size %d cannot map a %d-byte disk (needs %d entries)", h.L1Size, h.Size, need)
	}
	// qemu checks the offset's alignment and range whatever l1_size is
	// (qcow2_validate_table), so an empty table's offset counts too.
	if h.L1TableOffset%uint64(clusterSize) != 0 {
		return nil, bad(40, "l1_table_offset %d is not aligned to the %d-byte cluster", h.L1TableOffset, clusterSize)
	}
	if h.L1TableOffset > math.MaxInt64-uint64(h.L1Size)*8 {
		return nil, bad(40, "l1_table_offset %d with %d entries ends past the largest offset qemu takes (2^63-1)", h.L1TableOffset, h.L1Size)
	}
	if h.L1Size > 0 {
		if h.L1TableOffset > uint64(size) || !image.CheckRange(int64(h.L1TableOffset), int64(h.L1Size)*8, size) {
			return nil, bad(40, "L1 table (%d entries at offset %d) lies past the end of the file (%d bytes)", h.L1Size, h.L1TableOffset, size)
		}
	}
	if h.BackingFileOffset != 0 {
		if h.BackingFileSize == 0 || h.BackingFileSize > 1023 {
			return nil, bad(16, "backing_file_size %d outside 1..1023", h.BackingFileSize)
		}
		if h.BackingFileOffset > uint64(len(buf)) || !image.CheckRange(int64(h.BackingFileOffset), int64(h.BackingFileSize), int64(len(buf))) {
			return nil, bad(8, "backing file name (%d bytes at offset %d) lies outside the header", h.BackingFileSize, h.BackingFileOffset)
		}
		h.BackingFile = string(buf[h.BackingFileOffset : h.BackingFileOffset+uint64(h.BackingFileSize)])
	}
	if err := h.scanExtensions(buf, path); err != nil {
		return nil, err
	}
	return h, nil
}

// scanExtensions walks the header extensions (version 3 only) to find the
// backing format and refuse external data files and full-disk encryption.
func (h *header) scanExtensions(buf []byte, path string) error {
	if h.Version < 3 {
		return nil
	}
	off := int(h.HeaderLength)
	for i := 0; i < 1024; i++ {
		if off+8 > len(buf) {
			return nil // qemu stops at the end of the first cluster too
		}
		typ := binary.BigEndian.Uint32(buf[off:])
		n := int(binary.BigEndian.Uint32(buf[off+4:]))
		if typ == extEnd {
			return nil
		}
		if n > len(buf)-off-8 {
			return image.Corruptf(path, "qcow2", int64(off), "header extension %#x of %d bytes runs past the header", typ, n)
		}
		data := buf[off+8 : off+8+n]
		switch typ {
		case extBackingFormat:
			h.BackingFormat = string(data)
		case extExternalData:
			return image.Unsupportedf(path, "qcow2", int64(off), "external data file %q", string(data))
		case extFullDiskCrypto:
			return image.Unsupportedf(path, "qcow2", int64(off), "full-disk encryption header: decrypt with qemu-img first")
		}
		off += 8 + (n+7)/8*8
	}
	return image.Corruptf(path, "qcow2", int64(off), "more than 1024 header extensions")
}

func (h *header) subformat() string {
	if h.Version == 2 {
		return "v2, compat 0.10"
	}
	return "v3, compat 1.1"
}

func (h *header) fields() []image.Field {
	f := []image.Field{image.Fact("refcount bits", 1<<h.RefcountOrder)}
	if h.Version >= 3 {
		f = append(f,
			image.Fact("lazy refcounts", h.Compatible&1 != 0),
			image.Fact("extended l2", h.Incompatible&incompatExtendedL2 != 0))
		if h.Incompatible&incompatDirty != 0 {
			f = append(f, image.Fact("dirty", true))
		}
		if h.Incompatible&incompatCorrupt != 0 {
			f = append(f, image.Fact("corrupt", true))
		}
	}
	if h.NbSnapshots > 0 {
		f = append(f, image.Fact("internal snapshots", h.NbSnapshots, fmt.Sprintf("%d (the active state is read)", h.NbSnapshots)))
	}
	if h.BackingFormat != "" {
		f = append(f, image.Field{Name: "backing format", Value: h.BackingFormat})
	}
	return f
}
