package vhdx

// The region table, the metadata region and the BAT of a VHDX: where
// everything is, checked against the file and each other at Open.

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"vmimport/reader/image"
)

// readRegions finds the BAT and metadata regions in the region table.
func (im *Image) readRegions(warn func(string, ...any)) (bat, meta regionEntry, err error) {
	var es []regionEntry
	var firstRule string
	var firstAt int64
	tableOff := int64(region1Off)
	for i, off := range []int64{region1Off, region2Off} {
		b := make([]byte, regionSize)
		if err := image.ReadFull(im.src.R, im.src.Size, b, off, im.src.Path, format, "region table"); err != nil {
			return bat, meta, err
		}
		t, at, rule := parseRegionTable(b)
		if rule == "" {
			if i == 1 {
				warn("region table at offset %d is damaged (%s); using the copy at offset %d", firstAt, firstRule, off)
			}
			es, tableOff = t, off
			break
		}
		if i == 0 {
			firstRule, firstAt = rule, off+int64(at)
		} else {
			return bat, meta, im.corrupt(firstAt, "%s; the copy at offset %d: %s", firstRule, off+int64(at), rule)
		}
	}
	var haveBAT, haveMeta bool
	for i, e := range es {
		at := tableOff + 16 + 32*int64(i)
		if e.Offset%mib != 0 || e.Offset < mib || e.Length == 0 || e.Length%mib != 0 ||
			e.Offset > uint64(im.src.Size) || !image.CheckRange(int64(e.Offset), int64(e.Length), im.src.Size) {
			return bat, meta, im.corrupt(at, "region %s of %d bytes at offset %d is not 1 MiB-aligned inside the file (%d bytes)", e.GUID, e.Length, e.Offset, im.src.Size)
		}
		switch e.GUID {
		case regionBAT:
			if haveBAT {
				return bat, meta, im.corrupt(at, "second BAT region")
			}
			bat, haveBAT = e, true
		case regionMetadata:
			if haveMeta {
				return bat, meta, im.corrupt(at, "second metadata region")
			}
			meta, haveMeta = e, true
		default:
			if e.Required {
				return bat, meta, image.Unsupportedf(im.src.Path, format, at, "unknown required region %s", e.GUID)
			}
		}
	}
	if !haveBAT || !haveMeta {
		return bat, meta, im.corrupt(tableOff, "region table lacks the BAT or the metadata region")
	}
	// The regions may not overlap one another nor the log, as qemu checks.
	h := im.hdr
	if h.LogLength > 0 && image.CheckRange(int64(h.LogOffset), int64(h.LogLength), im.src.Size) {
		if overlaps(bat, int64(h.LogOffset), int64(h.LogLength)) {
			return bat, meta, im.corrupt(tableOff, "BAT region [%d, %d) overlaps the log [%d, %d)", bat.Offset, bat.Offset+uint64(bat.Length), h.LogOffset, h.LogOffset+uint64(h.LogLength))
		}
		if overlaps(meta, int64(h.LogOffset), int64(h.LogLength)) {
			return bat, meta, im.corrupt(tableOff, "metadata region [%d, %d) overlaps the log [%d, %d)", meta.Offset, meta.Offset+uint64(meta.Length), h.LogOffset, h.LogOffset+uint64(h.LogLength))
		}
	}
	if overlaps(bat, int64(meta.Offset), int64(meta.Length)) {
		return bat, meta, im.corrupt(tableOff, "BAT region [%d, %d) overlaps the metadata region [%d, %d)", bat.Offset, bat.Offset+uint64(bat.Length), meta.Offset, meta.Offset+uint64(meta.Length))
	}
	return bat, meta, nil
}

func overlaps(r regionEntry, off, n int64) bool {
	return int64(r.Offset) < off+n && off < int64(r.Offset)+int64(r.Length)
}

// regions lists what no block may overlap: the 1 MiB header section (file
// identifier, both headers, both region tables), the log, the BAT and the
// metadata region.
func (im *Image) regions(bat, meta regionEntry) *image.Regions {
	var r image.Regions
	r.Add(0, mib, "header section")
	if h := im.hdr; h.LogLength > 0 && image.CheckRange(int64(h.LogOffset), int64(h.LogLength), im.src.Size) {
		r.Add(int64(h.LogOffset), int64(h.LogLength), "log")
	}
	r.Add(int64(bat.Offset), int64(bat.Length), "BAT region")
	r.Add(int64(meta.Offset), int64(meta.Length), "metadata region")
	r.Seal()
	return &r
}

// readMetadata reads the metadata table and the items this reader needs.
func (im *Image) readMetadata(r regionEntry) error {
	src := im.src
	if r.Length < metaTabSize {
		return im.corrupt(int64(r.Offset), "metadata region of %d bytes cannot hold its 64 KiB table", r.Length)
	}
	b := make([]byte, metaTabSize)
	if err := image.ReadFull(src.R, src.Size, b, int64(r.Offset), src.Path, format, "metadata table"); err != nil {
		return err
	}
	es, at, rule := parseMetadataTable(b)
	if rule != "" {
		return im.corrupt(int64(r.Offset)+int64(at), "%s", rule)
	}
	items := map[guid][]byte{}
	for i, e := range es {
		at := int64(r.Offset) + 32 + 32*int64(i)
		if e.Length == 0 {
			continue
		}
		if e.Offset < metaTabSize || uint64(e.Offset)+uint64(e.Length) > uint64(r.Length) || e.Length > 1*mib {
			return im.corrupt(at, "metadata item %s of %d bytes at offset %d lies outside the %d-byte metadata region (or is over 1 MiB)", e.ID, e.Length, e.Offset, r.Length)
		}
		known := e.ID == metaFileParams || e.ID == metaVirtualSize || e.ID == metaDiskID ||
			e.ID == metaLogicalSect || e.ID == metaPhysicalSect || e.ID == metaParentLoc
		if e.User || !known {
			if e.Required && !e.User {
				return image.Unsupportedf(src.Path, format, at, "unknown required metadata item %s", e.ID)
			}
			continue
		}
		if _, dup := items[e.ID]; dup {
			return im.corrupt(at, "metadata item %s appears twice", e.ID)
		}
		v := make([]byte, e.Length)
		if err := image.ReadFull(src.R, src.Size, v, int64(r.Offset)+int64(e.Offset), src.Path, format, "metadata item"); err != nil {
			return err
		}
		items[e.ID] = v
	}
	need := func(id guid, name string, n int) ([]byte, error) {
		v, ok := items[id]
		if !ok {
			return nil, im.corrupt(int64(r.Offset), "metadata lacks the %s item", name)
		}
		if len(v) < n {
			return nil, im.corrupt(int64(r.Offset), "metadata item %s is %d bytes, shorter than %d", name, len(v), n)
		}
		return v, nil
	}
	le := binary.LittleEndian
	fp, err := need(metaFileParams, "file parameters", 8)
	if err != nil {
		return err
	}
	bs := le.Uint32(fp)
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return im.corrupt(int64(r.Offset), "block size %d is not a power of two from 1 MiB to 256 MiB", bs)
	}
	im.blockSize = int64(bs)
	im.leaveAlloc = le.Uint32(fp[4:])&1 != 0
	im.hasParent = le.Uint32(fp[4:])&2 != 0
	vs, err := need(metaVirtualSize, "virtual disk size", 8)
	if err != nil {
		return err
	}
	im.diskSize = le.Uint64(vs)
	if im.diskSize == 0 || im.diskSize > uint64(image.MaxVirtualSize) {
		return im.corrupt(int64(r.Offset), "virtual size %d is 0 or larger than %d (64 TiB)", im.diskSize, image.MaxVirtualSize)
	}
	im.size = int64(im.diskSize) / 512 * 512
	ls, err := need(metaLogicalSect, "logical sector size", 4)
	if err != nil {
		return err
	}
	im.logicalSect = int64(le.Uint32(ls))
	if im.logicalSect != 512 && im.logicalSect != 4096 {
		return im.corrupt(int64(r.Offset), "logical sector size %d is neither 512 nor 4096", im.logicalSect)
	}
	ps, err := need(metaPhysicalSect, "physical sector size", 4)
	if err != nil {
		return err
	}
	im.physicalSect = le.Uint32(ps)
	if im.physicalSect != 512 && im.physicalSect != 4096 {
		return im.corrupt(int64(r.Offset), "physical sector size %d is neither 512 nor 4096", im.physicalSect)
	}
	id, err := need(metaDiskID, "virtual disk ID", 16)
	if err != nil {
		return err
	}
	copy(im.diskID[:], id)
	if im.hasParent {
		pl, err := need(metaParentLoc, "parent locator", 20)
		if err != nil {
			return err
		}
		loc, rule := parseParentLocator(pl)
		if rule != "" {
			return im.corrupt(int64(r.Offset), "%s", rule)
		}
		im.locator = loc
	}
	im.chunkRatio = sectorsPerChunk * im.logicalSect / im.blockSize
	im.payloadBlocks = (int64(im.diskSize) + im.blockSize - 1) / im.blockSize
	return nil
}

// batIndex is the BAT entry of payload block i: a sector bitmap entry
// follows every chunkRatio payload entries.
func (im *Image) batIndex(i int64) int64 { return i + i/im.chunkRatio }

// bitmapIndex is the BAT entry of the sector bitmap block of chunk c.
func (im *Image) bitmapIndex(c int64) int64 { return c*(im.chunkRatio+1) + im.chunkRatio }

// readBAT reads and checks the BAT: every present block inside the file,
// clear of the container's own structures (meta) and of every other block.
func (im *Image) readBAT(r regionEntry, meta *image.Regions) error {
	src := im.src
	var total int64
	if im.hasParent {
		total = (im.payloadBlocks + im.chunkRatio - 1) / im.chunkRatio * (im.chunkRatio + 1)
	} else {
		total = im.payloadBlocks + (im.payloadBlocks-1)/im.chunkRatio
	}
	if total*8 > int64(r.Length) {
		return im.corrupt(int64(r.Offset), "BAT region of %d bytes cannot hold the %d entries a %d-byte disk of %d-byte blocks needs", r.Length, total, im.diskSize, im.blockSize)
	}
	b := make([]byte, total*8)
	if err := image.ReadFull(src.R, src.Size, b, int64(r.Offset), src.Path, format, "BAT"); err != nil {
		return err
	}
	im.bat = make([]uint64, total)
	for i := range im.bat {
		im.bat[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	entryAt := func(j int64) int64 { return int64(r.Offset) + 8*j }
	// used holds the BAT index of every block present, length[j] its size.
	var used []uint32
	length := func(j uint32) int64 {
		if im.hasParent && int64(j)%(im.chunkRatio+1) == im.chunkRatio {
			return mib // a sector bitmap block
		}
		i := int64(j) - int64(j)/(im.chunkRatio+1)
		return min(im.blockSize, int64(im.diskSize)-i*im.blockSize)
	}
	// place checks the block of BAT entry j, what describes it for errors.
	place := func(j int64, what string) error {
		e := im.bat[j]
		off, n := int64(e>>20<<20), length(uint32(j))
		switch {
		case off == 0:
			return im.corrupt(entryAt(j), "BAT entry %d is 0x%016x: %s at file offset 0 lies in the header section (a present block needs an offset of 1 MiB or more)", j, e, what)
		case !image.CheckRange(off, n, src.Size):
			return im.corrupt(entryAt(j), "BAT entry %d is 0x%016x: %s of %d bytes at file offset %d passes the end of the file (%d bytes)", j, e, what, n, off, src.Size)
		}
		if reg, ok := meta.Overlap(off, n); ok {
			return im.corrupt(entryAt(j), "BAT entry %d is 0x%016x: %s [%d, %d) overlaps the %s: data may not lie on the image's own structures", j, e, what, off, off+n, reg)
		}
		used = append(used, uint32(j))
		return nil
	}
	if im.hasParent {
		for c := int64(0); c*im.chunkRatio < im.payloadBlocks; c++ {
			j := im.bitmapIndex(c)
			e := im.bat[j]
			switch e & 7 {
			case stateNotPresent:
			case bitmapPresent:
				if err := place(j, fmt.Sprintf("the sector bitmap block of chunk %d", c)); err != nil {
					return err
				}
			default:
				return im.corrupt(entryAt(j), "BAT entry %d is 0x%016x: sector bitmap state %d is neither 0 (not present) nor 6 (present)", j, e, e&7)
			}
		}
	}
	for i := int64(0); i < im.payloadBlocks; i++ {
		j := im.batIndex(i)
		e := im.bat[j]
		switch e & 7 {
		case stateNotPresent, stateUndefined, stateZero, stateUnmapped, stateUnmappedV095:
		case statePartial:
			if !im.hasParent {
				return im.corrupt(entryAt(j), "BAT entry %d is 0x%016x: block %d is partially present (state 7) in a disk without a parent", j, e, i)
			}
			if im.bat[im.bitmapIndex(i/im.chunkRatio)]&7 != bitmapPresent {
				return im.corrupt(entryAt(j), "BAT entry %d is 0x%016x: block %d is partially present (state 7) but its chunk has no sector bitmap", j, e, i)
			}
			fallthrough
		case stateFullyPresent:
			if err := place(j, fmt.Sprintf("payload block %d", i)); err != nil {
				return err
			}
		default:
			return im.corrupt(entryAt(j), "BAT entry %d is 0x%016x: payload block state %d is undefined", j, e, e&7)
		}
	}
	// No two blocks may share bytes: sort them by place, compare neighbours.
	slices.SortFunc(used, func(a, b uint32) int { return cmp.Compare(im.bat[a]>>20, im.bat[b]>>20) })
	for k := 1; k < len(used); k++ {
		a, b := used[k-1], used[k]
		if end := int64(im.bat[a]>>20<<20) + length(a); end > int64(im.bat[b]>>20<<20) {
			return im.corrupt(entryAt(int64(b)), "BAT entries %d and %d are 0x%016x and 0x%016x: their blocks overlap at file offset %d", a, b, im.bat[a], im.bat[b], im.bat[b]>>20<<20)
		}
	}
	return nil
}
