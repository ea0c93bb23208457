package vmdk

import (
	"encoding/binary"
	"fmt"

	"vmimport/reader/image"
)

// The hosted sparse extent header (Virtual Disk Format 1.1, "Hosted Sparse
// Extent Header"): 512 little-endian bytes at the start of every sparse
// extent, and again as the footer of a stream-optimized extent whose grain
// directory comes last.
const (
	sector     = 512
	headerSize = 512

	magicKDMV = "KDMV"
	magicCOWD = "COWD"

	flagNewlineTest = 1 << 0  // the four line-end bytes are valid
	flagRedundantGT = 1 << 1  // a redundant grain directory exists
	flagZeroedGrain = 1 << 2  // GTE 1 means "this grain reads as zeros"
	flagCompressed  = 1 << 16 // grains are compressed
	flagMarkers     = 1 << 17 // grains and metadata are preceded by markers

	compressNone    = 0
	compressDeflate = 1

	// gdAtEnd in gdOffset says the grain directory is found through the
	// footer at the end of the file (stream-optimized extents).
	gdAtEnd = ^uint64(0)

	// Bounds that keep every allocation small whatever the header says.
	maxGrainSectors = 1 << 16 // 32 MiB grains, far above any real image
	maxGTEsPerGT    = 4096    // 16 KiB grain tables; the spec fixes 512
	maxDescSectors  = 2048    // 1 MiB embedded descriptor
)

// header is a parsed, checked SparseExtentHeader.
type header struct {
	Version       uint32
	Flags         uint32
	Capacity      uint64 // sectors
	GrainSize     uint64 // sectors
	DescOffset    uint64 // sectors
	DescSize      uint64 // sectors
	NumGTEsPerGT  uint32
	RGDOffset     uint64 // sectors
	GDOffset      uint64 // sectors
	Overhead      uint64 // sectors
	Unclean       bool
	Newline       [4]byte
	CompressAlgo  uint16
	numGrains     uint64
	numGTs        uint64
	grainBytes    int64
	gtBytes       int64
	virtualSize   int64
	compressed    bool
	markers       bool
	zeroedGrain   bool
	redundantGD   bool
	descAvailable bool
}

// parseHeader decodes and checks a 512-byte header read at off of a file of
// fileSize bytes. footer says this is the copy at the end of a stream.
func parseHeader(b []byte, off, fileSize int64, path string, footer bool) (*header, error) {
	if len(b) < headerSize {
		return nil, image.Corruptf(path, "vmdk", off, "sparse header is %d bytes, shorter than %d", len(b), headerSize)
	}
	le := binary.LittleEndian
	switch string(b[:4]) {
	case magicKDMV:
	case magicCOWD:
		return nil, image.Unsupportedf(path, "vmdk", off, "ESX vmfsSparse (COWD) extents are not supported: convert the disk with vmkfstools or qemu-img first")
	default:
		return nil, image.Corruptf(path, "vmdk", off, "sparse extent magic is %q, not %q", b[:4], magicKDMV)
	}
	h := &header{
		Version:      le.Uint32(b[4:]),
		Flags:        le.Uint32(b[8:]),
		Capacity:     le.Uint64(b[12:]),
		GrainSize:    le.Uint64(b[20:]),
		DescOffset:   le.Uint64(b[28:]),
		DescSize:     le.Uint64(b[36:]),
		NumGTEsPerGT: le.Uint32(b[44:]),
		RGDOffset:    le.Uint64(b[48:]),
		GDOffset:     le.Uint64(b[56:]),
		Overhead:     le.Uint64(b[64:]),
		Unclean:      b[72] != 0,
		CompressAlgo: le.Uint16(b[77:]),
	}
	copy(h.Newline[:], b[73:77])
	fail := func(field int64, rule string, args ...any) error {
		return image.Corruptf(path, "vmdk", off+field, rule, args...)
	}
	if h.Version < 1 || h.Version > 3 {
		return nil, image.Unsupportedf(path, "vmdk", off+4, "sparse extent version %d (versions 1 to 3 are known)", h.Version)
	}
	if h.Flags&flagNewlineTest != 0 && h.Newline != [4]byte{'\n', ' ', '\r', '\n'} {
		return nil, fail(73, "line-end detection bytes are %q, not %q: the file was copied in text mode and is damaged", h.Newline[:], "\n \r\n")
	}
	h.compressed = h.Flags&flagCompressed != 0
	h.markers = h.Flags&flagMarkers != 0
	h.zeroedGrain = h.Flags&flagZeroedGrain != 0
	h.redundantGD = h.Flags&flagRedundantGT != 0
	switch {
	case h.compressed && h.CompressAlgo != compressDeflate:
		return nil, image.Unsupportedf(path, "vmdk", off+77, "compression algorithm %d (only 1, deflate, is defined)", h.CompressAlgo)
	case !h.compressed && h.CompressAlgo != compressNone && h.CompressAlgo != compressDeflate:
		return nil, image.Unsupportedf(path, "vmdk", off+77, "compression algorithm %d (only 1, deflate, is defined)", h.CompressAlgo)
	case h.compressed && !h.markers:
		return nil, image.Unsupportedf(path, "vmdk", off+8, "compressed grains without markers (flags %#x)", h.Flags)
	}
	if h.GrainSize == 0 || h.GrainSize&(h.GrainSize-1) != 0 || h.GrainSize > maxGrainSectors {
		return nil, fail(20, "grain size of %d sectors is not a power of two from 1 to %d", h.GrainSize, maxGrainSectors)
	}
	if h.NumGTEsPerGT == 0 || h.NumGTEsPerGT > maxGTEsPerGT {
		return nil, fail(44, "%d entries per grain table is outside 1..%d", h.NumGTEsPerGT, maxGTEsPerGT)
	}
	if h.Capacity > uint64(image.MaxVirtualSize)/sector {
		return nil, fail(12, "capacity of %d sectors (%d grains) exceeds the %d TiB limit", h.Capacity, h.Capacity/h.GrainSize, image.MaxVirtualSize>>40)
	}
	h.virtualSize = int64(h.Capacity) * sector
	h.grainBytes = int64(h.GrainSize) * sector
	h.gtBytes = int64(h.NumGTEsPerGT) * 4
	h.numGrains = (h.Capacity + h.GrainSize - 1) / h.GrainSize
	h.numGTs = (h.numGrains + uint64(h.NumGTEsPerGT) - 1) / uint64(h.NumGTEsPerGT)
	// The grain directory holds one 4-byte entry per grain table and lives
	// in the file: a count the file cannot hold is refused before any
	// allocation.
	if h.numGTs*4 > uint64(fileSize) {
		return nil, fail(12, "capacity of %d sectors needs a grain directory of %d entries (%d bytes), more than the file's %d bytes", h.Capacity, h.numGTs, h.numGTs*4, fileSize)
	}
	if h.DescOffset != 0 || h.DescSize != 0 {
		if h.DescSize > maxDescSectors {
			return nil, fail(36, "embedded descriptor of %d sectors is larger than %d", h.DescSize, maxDescSectors)
		}
		if h.DescOffset == 0 || h.DescOffset > uint64(fileSize)/sector || !image.CheckRange(int64(h.DescOffset)*sector, int64(h.DescSize)*sector, fileSize) {
			return nil, fail(28, "embedded descriptor (sector %d, %d sectors) lies outside the file (%d bytes)", h.DescOffset, h.DescSize, fileSize)
		}
		h.descAvailable = h.DescSize > 0
	}
	// Grains start after the overhead; a file shorter than it is cut
	// short (qemu-img: "File truncated").
	if h.Overhead > uint64(fileSize)/sector {
		return nil, fail(64, "overhead of %d sectors (%d bytes) is more than the file's %d bytes: the file is truncated", h.Overhead, h.Overhead*sector, fileSize)
	}
	if h.GDOffset == gdAtEnd {
		if footer {
			return nil, fail(56, "footer's grain directory offset is the 'at end' marker too")
		}
		if !h.markers {
			return nil, fail(56, "grain directory 'at end' without stream markers (flags %#x)", h.Flags)
		}
		return h, nil
	}
	if err := h.checkGD(h.GDOffset, fileSize, path, off+56); err != nil {
		return nil, err
	}
	return h, nil
}

// checkGD checks that a grain directory at sector gd lies inside the file.
func (h *header) checkGD(gd uint64, fileSize int64, path string, field int64) error {
	if gd == 0 || gd > uint64(fileSize)/sector || !image.CheckRange(int64(gd)*sector, int64(h.numGTs)*4, fileSize) {
		return image.Corruptf(path, "vmdk", field, "grain directory at sector %d (%d entries) lies outside the file (%d bytes)", gd, h.numGTs, fileSize)
	}
	return nil
}

func (h *header) subformat() string {
	switch {
	case h.compressed:
		return "streamOptimized"
	default:
		return fmt.Sprintf("sparse v%d", h.Version)
	}
}
