// Package vdi reads VirtualBox VDI images (version 1.1, the one VirtualBox
// and qemu write): static (preallocated) and dynamic disks, from the layout
// of VirtualBox's VDICore.h, checked against qemu-img.
//
// The block map has one 32-bit entry per block: the index of the block in
// the data area, 0xFFFFFFFF for a block never written and 0xFFFFFFFE for a
// block discarded to zeros; both read as zeros. Differencing ("diff" and
// "undo") images are refused, as qemu refuses them.
package vdi

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"vmimport/reader/image"
)

const (
	format = "vdi"

	signature = 0xbeda107f
	version11 = 0x00010001

	typeNormal = 1 // dynamic
	typeFixed  = 2 // static
	typeUndo   = 3
	typeDiff   = 4

	blockFree    = 0xFFFFFFFF
	blockZero    = 0xFFFFFFFE
	minBlockSize = 4 << 10
	maxBlockSize = 256 << 20
	headerEnd    = 0x1C8 // end of a version 1.1 header without LCHS geometry
)

// header is the VDI 1.1 header. Offsets are from the start of the file.
type header struct {
	Text            string // the banner, e.g. "<<< Oracle VM VirtualBox Disk Image >>>"
	Version         uint32
	HeaderSize      uint32
	Type            uint32
	Flags           uint32
	Comment         string
	OffsetBmap      uint32
	OffsetData      uint32
	Cylinders       uint32
	Heads           uint32
	Sectors         uint32
	SectorSize      uint32
	DiskSize        uint64
	BlockSize       uint32
	BlockExtra      uint32
	BlocksInImage   uint32
	BlocksAllocated uint32
	UUIDImage       [16]byte
	UUIDLastSnap    [16]byte
	UUIDLink        [16]byte
	UUIDParent      [16]byte
}

// parseHeader decodes the header from the first 512 bytes of a file of
// fileSize bytes (-1: unknown). It returns the
// offset of the field broken and the rule, if any, and whether the error is
// an unsupported variant rather than a corrupt file.
func parseHeader(b []byte, fileSize int64) (h *header, at int, rule string, unsupported bool) {
	if len(b) < headerEnd {
		return nil, 0, "header shorter than 456 bytes", false
	}
	le := binary.LittleEndian
	if le.Uint32(b[0x40:]) != signature {
		return nil, 0x40, "no VDI signature", false
	}
	h = &header{
		Text:            strings.TrimSpace(strings.TrimRight(string(b[:0x40]), "\x00")),
		Version:         le.Uint32(b[0x44:]),
		HeaderSize:      le.Uint32(b[0x48:]),
		Type:            le.Uint32(b[0x4C:]),
		Flags:           le.Uint32(b[0x50:]),
		Comment:         strings.TrimRight(string(b[0x54:0x154]), "\x00"),
		OffsetBmap:      le.Uint32(b[0x154:]),
		OffsetData:      le.Uint32(b[0x158:]),
		Cylinders:       le.Uint32(b[0x15C:]),
		Heads:           le.Uint32(b[0x160:]),
		Sectors:         le.Uint32(b[0x164:]),
		SectorSize:      le.Uint32(b[0x168:]),
		DiskSize:        le.Uint64(b[0x170:]),
		BlockSize:       le.Uint32(b[0x178:]),
		BlockExtra:      le.Uint32(b[0x17C:]),
		BlocksInImage:   le.Uint32(b[0x180:]),
		BlocksAllocated: le.Uint32(b[0x184:]),
	}
	copy(h.UUIDImage[:], b[0x188:])
	copy(h.UUIDLastSnap[:], b[0x198:])
	copy(h.UUIDLink[:], b[0x1A8:])
	copy(h.UUIDParent[:], b[0x1B8:])
	switch {
	case h.Version != version11:
		return h, 0x44, fmt.Sprintf("version %d.%d (only 1.1 is read)", h.Version>>16, h.Version&0xffff), true
	case h.HeaderSize < headerEnd-0x48:
		return h, 0x48, fmt.Sprintf("header size %d is smaller than the %d bytes of a version 1.1 header", h.HeaderSize, headerEnd-0x48), false
	case h.Type == typeUndo || h.Type == typeDiff:
		return h, 0x4C, fmt.Sprintf("image type %d (undo or differencing) is not read", h.Type), true
	case h.Type != typeNormal && h.Type != typeFixed:
		return h, 0x4C, fmt.Sprintf("image type %d is none of dynamic (1), static (2)", h.Type), false
	case h.UUIDLink != [16]byte{} || h.UUIDParent != [16]byte{}:
		return h, 0x1A8, "a differencing image (non-null link or parent UUID) is not read", true
	case h.OffsetBmap%512 != 0:
		return h, 0x154, fmt.Sprintf("block map offset %d is not a multiple of 512", h.OffsetBmap), false
	case h.OffsetBmap < headerEnd:
		return h, 0x154, fmt.Sprintf("block map offset %d lies inside the %d-byte header", h.OffsetBmap, headerEnd), false
	case fileSize >= 0 && int64(h.OffsetBmap) >= fileSize:
		return h, 0x154, fmt.Sprintf("block map offset %d lies past the end of the file (%d bytes)", h.OffsetBmap, fileSize), false
	case h.OffsetData%512 != 0:
		return h, 0x158, fmt.Sprintf("data offset %d is not a multiple of 512", h.OffsetData), false
	case h.OffsetData < h.OffsetBmap:
		return h, 0x158, fmt.Sprintf("data offset %d lies before the block map at offset %d", h.OffsetData, h.OffsetBmap), false
	case h.SectorSize != 512:
		return h, 0x168, fmt.Sprintf("sector size %d is not 512", h.SectorSize), false
	case h.BlockSize < minBlockSize || h.BlockSize > maxBlockSize || h.BlockSize&(h.BlockSize-1) != 0:
		return h, 0x178, fmt.Sprintf("block size %d is not a power of two from 4 KiB to 256 MiB", h.BlockSize), false
	case h.BlockExtra != 0:
		return h, 0x17C, fmt.Sprintf("%d bytes of extra data per block are not read", h.BlockExtra), true
	case h.DiskSize > uint64(image.MaxVirtualSize):
		return h, 0x170, fmt.Sprintf("virtual size %d is larger than %d (64 TiB)", h.DiskSize, image.MaxVirtualSize), false
	case h.DiskSize > uint64(h.BlocksInImage)*uint64(h.BlockSize):
		return h, 0x180, fmt.Sprintf("disk size %d is larger than its %d blocks of %d bytes", h.DiskSize, h.BlocksInImage, h.BlockSize), false
	case uint64(h.OffsetBmap)+4*uint64(h.BlocksInImage) > uint64(h.OffsetData):
		return h, 0x180, fmt.Sprintf("block map of %d entries at offset %d overlaps the data at offset %d", h.BlocksInImage, h.OffsetBmap, h.OffsetData), false
	}
	return h, 0, "", false
}

// Image is an opened VDI.
type Image struct {
	src       image.Source
	h         *header
	size      int64
	blockSize int64
	bmap      []uint32 // one entry per block of the virtual size
}

var _ image.Image = (*Image)(nil)

// Open opens the VDI in src.
func Open(src image.Source, _ *image.Options) (*Image, error) {
	if src.Size < headerEnd {
		return nil, image.Corruptf(src.Path, format, 0, "file of %d bytes is shorter than the %d-byte VDI 1.1 header: a truncated VDI", src.Size, headerEnd)
	}
	b := make([]byte, min(512, src.Size))
	if err := image.ReadFull(src.R, src.Size, b, 0, src.Path, format, "header"); err != nil {
		return nil, err
	}
	if sig := binary.LittleEndian.Uint32(b[0x40:]); sig != signature {
		return nil, image.Corruptf(src.Path, format, 0x40, "signature 0x%08x is not the VDI signature 0x%08x", sig, uint32(signature))
	}
	h, at, rule, unsup := parseHeader(b, src.Size)
	if rule != "" {
		if unsup {
			return nil, image.Unsupportedf(src.Path, format, int64(at), "%s", rule)
		}
		return nil, image.Corruptf(src.Path, format, int64(at), "%s", rule)
	}
	im := &Image{src: src, h: h, size: int64(h.DiskSize) / 512 * 512, blockSize: int64(h.BlockSize)}
	blocks := (im.size + im.blockSize - 1) / im.blockSize
	if !image.CheckRange(int64(h.OffsetBmap), 4*blocks, src.Size) {
		return nil, image.Corruptf(src.Path, format, 0x154, "block map (%d entries at offset %d) lies past the end of the file (%d bytes)", blocks, h.OffsetBmap, src.Size)
	}
	raw := make([]byte, 4*blocks)
	if err := image.ReadFull(src.R, src.Size, raw, int64(h.OffsetBmap), src.Path, format, "block map"); err != nil {
		return nil, err
	}
	im.bmap = make([]uint32, blocks)
	// used pairs each allocated block with its entry, to find two entries
	// that share a block.
	var used []uint64
	for i := range im.bmap {
		e := binary.LittleEndian.Uint32(raw[4*i:])
		im.bmap[i] = e
		if e == blockFree || e == blockZero {
			continue
		}
		at := int64(h.OffsetBmap) + 4*int64(i)
		if e >= h.BlocksInImage {
			return nil, image.Corruptf(src.Path, format, at, "block map entry %d is %d, not below the image's %d blocks (blocks in image at 0x180)", i, e, h.BlocksInImage)
		}
		need := min(im.blockSize, im.size-int64(i)*im.blockSize)
		if !image.CheckRange(im.dataOffset(e), need, src.Size) {
			return nil, image.Corruptf(src.Path, format, at, "block map entry %d is %d: its %d bytes at offset %d (data offset %d + %d x %d-byte blocks) pass the end of the file (%d bytes)", i, e, need, im.dataOffset(e), h.OffsetData, e, im.blockSize, src.Size)
		}
		used = append(used, uint64(e)<<32|uint64(i))
	}
	slices.Sort(used)
	for k := 1; k < len(used); k++ {
		if used[k]>>32 == used[k-1]>>32 {
			i, j := uint32(used[k-1]), uint32(used[k])
			return nil, image.Corruptf(src.Path, format, int64(h.OffsetBmap)+4*int64(j), "block map entries %d and %d both hold block %d (offset %d): two parts of the disk cannot share one block", i, j, used[k]>>32, im.dataOffset(uint32(used[k]>>32)))
		}
	}
	return im, nil
}

func (im *Image) dataOffset(e uint32) int64 {
	return int64(im.h.OffsetData) + int64(e)*im.blockSize
}

// ReadAt reads guest bytes; safe for concurrent use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("vdi: negative offset")
	}
	n, short := image.Clip(off, len(p), im.size)
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	for done := 0; done < n; {
		pos := off + int64(done)
		bi := pos / im.blockSize
		in := pos % im.blockSize
		k := int(min(int64(n-done), im.blockSize-in))
		// Adjacent blocks stored one after the other are read at once.
		for e := im.bmap[bi]; e < blockZero && done+k < n; {
			nb := (pos + int64(k)) / im.blockSize
			if im.bmap[nb] != e+uint32(nb-bi) {
				break
			}
			k = int(min(int64(n-done), int64(k)+im.blockSize))
		}
		buf := p[done : done+k]
		if e := im.bmap[bi]; e >= blockZero {
			clear(buf)
		} else if err := image.ReadFull(im.src.R, im.src.Size, buf, im.dataOffset(e)+in, im.src.Path, format, "block data"); err != nil {
			return done, err
		}
		done += k
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// Size is the virtual size.
func (im *Image) Size() int64 { return im.size }

// Extent reports unallocated and discarded blocks, and allocated blocks
// that are holes of the file, as zero runs.
func (im *Image) Extent(off, n int64) (image.Extent, error) {
	if off < 0 || off >= im.size {
		return image.Extent{}, io.EOF
	}
	n = min(n, im.size-off)
	bi := off / im.blockSize
	zero := im.bmap[bi] >= blockZero
	end := min((bi+1)*im.blockSize, off+n)
	if !zero {
		// A block of a static image never written is a hole of the file.
		if h := image.HoleAt(im.src.Fd, im.dataOffset(im.bmap[bi])+off%im.blockSize, end-off); h > 0 {
			return image.Extent{Start: off, Length: h, Zero: true}, nil
		}
		return image.Extent{Start: off, Length: end - off}, nil
	}
	for end < off+n && (im.bmap[end/im.blockSize] >= blockZero) == zero {
		end = min(end+im.blockSize, off+n)
	}
	return image.Extent{Start: off, Length: end - off, Zero: zero}, nil
}

// Info describes the image.
func (im *Image) Info() image.Info {
	h := im.h
	sub := "dynamic"
	if h.Type == typeFixed {
		sub = "static"
	}
	info := image.Info{
		Format:      format,
		Subformat:   sub,
		VirtualSize: im.size,
		ClusterSize: im.blockSize,
		Path:        im.src.Path,
	}
	add := func(name, value string) { info.Fields = append(info.Fields, image.Field{Name: name, Value: value}) }
	add("creator", h.Text)
	add("disk type", sub)
	info.Fields = append(info.Fields, image.Fact("block size", im.blockSize),
		image.Fact("blocks allocated", map[string]any{"allocated": h.BlocksAllocated, "total": h.BlocksInImage}, fmt.Sprintf("%d of %d", h.BlocksAllocated, h.BlocksInImage)))
	if h.Cylinders != 0 {
		info.Fields = append(info.Fields, image.Geometry(int64(h.Cylinders), int64(h.Heads), int64(h.Sectors)))
	}
	add("UUID", uuid(h.UUIDImage))
	if h.Comment != "" {
		add("comment", h.Comment)
	}
	return info
}

func uuid(u [16]byte) string {
	// VirtualBox stores UUIDs as Windows GUIDs: the first three groups
	// little-endian.
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%s-%s", le.Uint32(u[0:]), le.Uint16(u[4:]), le.Uint16(u[6:]), hex.EncodeToString(u[8:10]), hex.EncodeToString(u[10:]))
}

// Close releases nothing: the file belongs to the caller.
func (im *Image) Close() error { return nil }
