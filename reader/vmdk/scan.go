package vmdk

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"

	"vmimport/reader/image"
)

// scan checks, once at open, where every grain of a sparse extent lies:
// inside the file, clear of the extent's own structures (header, embedded
// descriptor, grain directories, grain tables, the stream's footer) and,
// for plain grains, clear of every other grain. A grain table entry that
// breaks one of these would give the guest a table's or another grain's
// bytes. Compressed grains are checked here by their marker, and on
// reading by their whole length.
//
// Memory: the sorted grain table sectors (4 bytes per table, as the grain
// directory) and a bitmap of one bit per grain-sized slot of the file.
func (s *sparseExtent) scan() error {
	h := s.h
	s.meta.Add(0, headerSize, "sparse header")
	if h.descAvailable {
		s.meta.Add(int64(h.DescOffset)*sector, int64(h.DescSize)*sector, "embedded descriptor")
	}
	gdBytes := int64(h.numGTs) * 4
	s.meta.Add(int64(s.gdSector)*sector, gdBytes, "grain directory")
	if h.markers && s.gdSector > 0 {
		s.meta.Add(int64(s.gdSector-1)*sector, sector, "grain directory marker")
	}
	if s.footer {
		s.meta.Add(s.footerAt, s.size-s.footerAt, "footer")
	}
	for _, g := range s.gd {
		if g != 0 {
			s.gtSecs = append(s.gtSecs, g)
		}
	}
	// The redundant directory and its tables, where a writer made them,
	// are metadata as well (qemu keeps both copies up to date).
	if h.redundantGD && h.RGDOffset != 0 && h.RGDOffset != s.gdSector && h.checkGD(h.RGDOffset, s.size, s.path, 48) == nil {
		rgd := make([]byte, gdBytes)
		if image.ReadFull(s.r, s.size, rgd, int64(h.RGDOffset)*sector, s.path, "vmdk", "redundant grain directory") == nil {
			s.meta.Add(int64(h.RGDOffset)*sector, gdBytes, "redundant grain directory")
			for i := range len(s.gd) {
				if v := binary.LittleEndian.Uint32(rgd[4*i:]); v != 0 && image.CheckRange(int64(v)*sector, h.gtBytes, s.size) {
					s.gtSecs = append(s.gtSecs, v)
				}
			}
		}
	}
	s.meta.Seal()
	slices.Sort(s.gtSecs)
	s.gtSecs = slices.Compact(s.gtSecs)

	gb := h.grainBytes
	slots := newSlots(s.size, h.GrainSize)
	per := int64(h.NumGTEsPerGT)
	raw := make([]byte, h.gtBytes)
	for t, g := range s.gd {
		if g == 0 {
			continue
		}
		gtOff := int64(g) * sector
		if err := image.ReadFull(s.r, s.size, raw, gtOff, s.path, "vmdk", fmt.Sprintf("grain table %d", t)); err != nil {
			return err
		}
		for i := range per {
			grain := int64(t)*per + i
			if grain*gb >= h.virtualSize {
				break
			}
			e := binary.LittleEndian.Uint32(raw[4*i:])
			if s.classify(e) != classData {
				continue
			}
			at, off := gtOff+4*i, int64(e)*sector
			where := func() string {
				return fmt.Sprintf("grain table %d entry %d (grain %d) is sector %d", t, i, grain, e)
			}
			if h.compressed {
				if off > s.size-markerSize {
					return image.Corruptf(s.path, "vmdk", at, "%s: its marker at offset %d lies past the end of the file (%d bytes)", where(), off, s.size)
				}
				if what, ok := s.overlap(off, markerSize); ok {
					return image.Corruptf(s.path, "vmdk", at, "%s: its marker at offset %d lies on the %s", where(), off, what)
				}
				continue
			}
			n := min(gb, h.virtualSize-grain*gb)
			if !image.CheckRange(off, n, s.size) {
				return image.Corruptf(s.path, "vmdk", at, "%s: its %d bytes at offset %d pass the end of the file (%d bytes): a truncated extent", where(), n, off, s.size)
			}
			if what, ok := s.overlap(off, n); ok {
				return image.Corruptf(s.path, "vmdk", at, "%s: its bytes [%d, %d) lie on the %s", where(), off, off+n, what)
			}
			if !slots.take(e) {
				return image.Corruptf(s.path, "vmdk", at, "%s: another grain uses the bytes at offset %d too", where(), off)
			}
		}
	}
	if e, ok := slots.settle(); !ok {
		return image.Corruptf(s.path, "vmdk", 0, "two grains overlap at sector %d", e)
	}
	return nil
}

// overlap names the structure [off, off+n) of the extent file lies on.
func (s *sparseExtent) overlap(off, n int64) (string, bool) {
	if r, ok := s.meta.Overlap(off, n); ok {
		return r.String(), true
	}
	// The last grain table starting before the end of the range is the
	// one reaching furthest: they all have the same length.
	// In a stream, each table's metadata marker fills the sector before it.
	var lead int64
	if s.h.markers {
		lead = sector
	}
	k := sort.Search(len(s.gtSecs), func(i int) bool { return int64(s.gtSecs[i])*sector-lead >= off+n })
	if k > 0 {
		start := int64(s.gtSecs[k-1])*sector - lead
		if start+lead+s.h.gtBytes > off {
			return fmt.Sprintf("grain table at sector %d [%d, %d)", s.gtSecs[k-1], start, start+lead+s.h.gtBytes), true
		}
	}
	return "", false
}

// slots finds two grains sharing bytes. Writers place grains on a grid of
// grain-sized slots; a bitmap of the slots holds those on the grid of the
// first grain seen, a list the few (if any) off it, checked at the end.
type slots struct {
	g       uint64 // grain size in sectors
	residue uint64
	started bool
	bits    []uint64
	odd     []uint32
}

func newSlots(fileSize int64, grainSectors uint64) *slots {
	n := uint64(fileSize)/sector/grainSectors + 2
	return &slots{g: grainSectors, bits: make([]uint64, (n+63)/64)}
}

func (s *slots) slot(sec uint64) uint64 { return (sec - s.residue) / s.g }

func (s *slots) has(i uint64) bool {
	return i/64 < uint64(len(s.bits)) && s.bits[i/64]&(1<<(i%64)) != 0
}

// take records a grain at sector sec; false if one is there already.
func (s *slots) take(sec uint32) bool {
	v := uint64(sec)
	if !s.started {
		s.started, s.residue = true, v%s.g
	}
	if v < s.residue || v%s.g != s.residue {
		s.odd = append(s.odd, sec)
		return true
	}
	i := s.slot(v)
	if s.has(i) {
		return false
	}
	s.bits[i/64] |= 1 << (i % 64)
	return true
}

// settle checks the grains off the grid against the grid and one another.
func (s *slots) settle() (uint32, bool) {
	if len(s.odd) == 0 {
		return 0, true
	}
	slices.Sort(s.odd)
	for k, sec := range s.odd {
		if k > 0 && uint64(sec-s.odd[k-1]) < s.g {
			return sec, false
		}
		v := uint64(sec)
		// An off-grid grain spans two slots of the grid.
		if v >= s.residue && s.has(s.slot(v)) {
			return sec, false
		}
		if v+s.g > s.residue && s.has(s.slot(v+s.g-1)) {
			return sec, false
		}
	}
	return 0, true
}
