// Package vhdx reads Hyper-V VHDX images (Hyper-V, Disk2vhd, Azure Stack,
// qemu): fixed, dynamic and differencing disks, written from MS-VHDX and
// checked against qemu-img.
//
// Every structure with a checksum (the two headers, the region tables) is
// verified with CRC-32C; a damaged header or primary region table is
// survived when its twin is sound, with a warning. Block sizes of 1 to
// 256 MiB and logical sectors of 512 or 4096 bytes are read. Payload
// blocks that are not present, undefined, zero or unmapped read as zeros,
// as qemu reads them (MS-VHDX lets undefined and unmapped blocks read as
// zeros); in a differencing disk, not present blocks read from the parent
// and partially present blocks sector by sector as the chunk's sector
// bitmap says (bit 0 of byte 0 is the chunk's first sector, MS-VHDX 2.4).
//
// An image whose log holds entries (it was not closed cleanly) has its log
// replayed in memory, never written back: reading it without the replay
// would return stale data. The result equals what qemu-img shows after
// "qemu-img check -r all" replayed the log into the file. A header that
// names a log in which no valid entry is found is read as it is, as qemu
// does.
package vhdx

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"vmimport/reader/image"
)

const format = "vhdx"

// Image is an opened VHDX.
type Image struct {
	src     image.Source
	creator string
	hdr     *header

	size          int64 // virtual size, rounded down to 512 as qemu does
	diskSize      uint64
	blockSize     int64
	logicalSect   int64
	physicalSect  uint32
	diskID        guid
	leaveAlloc    bool
	hasParent     bool
	chunkRatio    int64
	payloadBlocks int64
	bat           []uint64

	parent     image.Image
	parentName string
	locator    parentLocator
	warnings   []string
	replayed   int // log entries replayed in memory
}

var _ image.Image = (*Image)(nil)

// Open opens the VHDX in src. A differencing disk's parent is opened
// through opts.Open, only when opts.AllowBacking is set.
func Open(src image.Source, opts *image.Options) (*Image, error) {
	id := make([]byte, 520)
	if src.Size < 1*mib {
		if src.Size >= 8 {
			return nil, image.Corruptf(src.Path, format, 0, "file of %d bytes is shorter than the 1 MiB header section", src.Size)
		}
		return nil, image.WrongFormat(format, "file too short")
	}
	if err := image.ReadFull(src.R, src.Size, id, 0, src.Path, format, "file identifier"); err != nil {
		return nil, err
	}
	if string(id[:8]) != "vhdxfile" {
		return nil, image.WrongFormat(format, "no \"vhdxfile\" signature")
	}
	im := &Image{src: src, creator: utf16LE(id[8:])}
	warn := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		im.warnings = append(im.warnings, msg)
		opts.Warnf("%s: vhdx: %s", src.Path, msg)
	}
	if err := im.readHeaders(warn); err != nil {
		return nil, err
	}
	if err := im.checkLog(warn); err != nil {
		return nil, err
	}
	bat, meta, err := im.readRegions(warn)
	if err != nil {
		return nil, err
	}
	if err := im.readMetadata(meta); err != nil {
		return nil, err
	}
	if err := im.readBAT(bat, im.regions(bat, meta)); err != nil {
		return nil, err
	}
	if im.hasParent {
		if err := im.openParent(opts); err != nil {
			return nil, err
		}
	}
	return im, nil
}

func (im *Image) corrupt(off int64, rule string, args ...any) error {
	return image.Corruptf(im.src.Path, format, off, rule, args...)
}

// readHeaders picks the sound header with the larger sequence number.
func (im *Image) readHeaders(warn func(string, ...any)) error {
	var hs [2]*header
	var rules [2]string
	var ats [2]int64
	for i, off := range []int64{header1Off, header2Off} {
		b := make([]byte, headerSize)
		if err := image.ReadFull(im.src.R, im.src.Size, b, off, im.src.Path, format, "header"); err != nil {
			return err
		}
		h, at, rule := parseHeader(b)
		hs[i], rules[i], ats[i] = h, rule, off+int64(at)
	}
	switch {
	case hs[0] == nil && hs[1] == nil:
		return im.corrupt(ats[0], "%s; the second header at offset %d: %s", rules[0], ats[1], rules[1])
	case hs[0] == nil:
		warn("header 1 at offset %d is damaged (%s); using header 2", ats[0], rules[0])
		im.hdr = hs[1]
	case hs[1] == nil:
		warn("header 2 at offset %d is damaged (%s); using header 1", ats[1], rules[1])
		im.hdr = hs[0]
	case hs[1].Seq > hs[0].Seq:
		im.hdr = hs[1]
	default:
		im.hdr = hs[0]
	}
	return nil
}

// checkLog replays a log that holds entries, in memory: they hold writes
// not yet applied to the file.
func (im *Image) checkLog(warn func(string, ...any)) error {
	h := im.hdr
	if h.LogGUID.zero() {
		return nil
	}
	if h.LogVersion != 0 {
		return image.Unsupportedf(im.src.Path, format, -1, "log version %d (only 0 is defined)", h.LogVersion)
	}
	if h.LogLength == 0 || h.LogLength%mib != 0 || h.LogOffset%mib != 0 || h.LogOffset < mib ||
		h.LogOffset > uint64(im.src.Size) || !image.CheckRange(int64(h.LogOffset), int64(h.LogLength), im.src.Size) {
		return im.corrupt(-1, "log of %d bytes at offset %d is not 1 MiB-aligned inside the file (%d bytes)", h.LogLength, h.LogOffset, im.src.Size)
	}
	n, err := im.replayLog()
	if err != nil {
		return fmt.Errorf("replaying the log of an image not closed cleanly: %w", err)
	}
	if n > 0 {
		warn("the image was not closed cleanly: replayed %d log entries in memory (the file is not changed)", n)
		im.replayed = n
		return nil
	}
	warn("header names log %s but the log holds no valid entry; nothing to replay", h.LogGUID)
	return nil
}

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

// openParent finds, checks and opens the parent of a differencing disk:
// the parent must be a VHDX whose data write GUID is the child's
// parent_linkage (or parent_linkage2).
func (im *Image) openParent(opts *image.Options) error {
	var names []string
	for _, k := range []string{"relative_path", "absolute_win32_path", "volume_path"} {
		if n := windowsPath(im.locator[k]); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	var ids []string
	for _, k := range []string{"parent_linkage", "parent_linkage2"} {
		if id := strings.Trim(strings.ToLower(im.locator[k]), "{}"); id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		ids = []string{"(none)"} // no parent can match: refused below
	}
	p, name, err := image.OpenParent(im.src, opts, image.Parent{
		Format: format, Kind: "differencing disk with parent", Names: names, Offset: -1,
		IDs: ids, IDName: "data write GUID",
	})
	im.parentName = name
	if name == "" {
		im.parentName = im.locator["relative_path"]
	}
	if err != nil {
		return err
	}
	im.parent = p
	return nil
}

// Identity is the current header's data write GUID, which a differencing
// child records as its parent_linkage.
func (im *Image) Identity() (string, string) { return format, im.hdr.DataWriteGUID.String() }

// windowsPath turns ".\dir\parent.vhdx" into "dir/parent.vhdx"; a path with
// a drive letter, a volume or UNC prefix cannot be found here and is dropped.
func windowsPath(p string) string {
	if len(p) >= 2 && p[1] == ':' || strings.HasPrefix(p, `\\`) {
		return ""
	}
	p = strings.ReplaceAll(p, `\`, "/")
	for strings.HasPrefix(p, "./") {
		p = p[2:]
	}
	return p
}

// ReadAt reads guest bytes; safe for concurrent use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("vhdx: negative offset")
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
		buf := p[done : done+k]
		e := im.bat[im.batIndex(bi)]
		var err error
		switch e & 7 {
		case stateFullyPresent:
			err = im.readFile(buf, int64(e>>20<<20)+in)
		case statePartial:
			err = im.readPartial(buf, pos, int64(e>>20<<20))
		case stateNotPresent:
			if im.parent != nil {
				err = im.readParent(buf, pos)
			} else {
				clear(buf)
			}
		default:
			clear(buf)
		}
		if err != nil {
			return done, err
		}
		done += k
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// readPartial reads inside one partially present block: sectors whose bit
// is set in the chunk's sector bitmap come from the block, the others from
// the parent. Bit i of byte j stands for sector 8j+i of the chunk.
func (im *Image) readPartial(buf []byte, pos, blockOff int64) error {
	ss := im.logicalSect
	chunk := pos / im.blockSize / im.chunkRatio
	bm := im.bat[im.bitmapIndex(chunk)]
	chunkStart := chunk * im.chunkRatio * im.blockSize
	first := (pos - chunkStart) / ss
	last := (pos + int64(len(buf)) - 1 - chunkStart) / ss
	bits := make([]byte, last/8-first/8+1)
	if err := im.readFile(bits, int64(bm>>20<<20)+first/8); err != nil {
		return err
	}
	bit := func(s int64) bool { return bits[s/8-first/8]&(1<<(s%8)) != 0 }
	blockStart := pos / im.blockSize * im.blockSize
	for done := 0; done < len(buf); {
		p := pos + int64(done)
		s := (p - chunkStart) / ss
		set := bit(s)
		end := (s + 1) * ss // chunk-relative byte offset
		for end <= last*ss && bit(end/ss) == set {
			end += ss
		}
		k := int(min(chunkStart+end-p, int64(len(buf)-done)))
		var err error
		if set {
			err = im.readFile(buf[done:done+k], blockOff+(p-blockStart))
		} else {
			err = im.readParent(buf[done:done+k], p)
		}
		if err != nil {
			return err
		}
		done += k
	}
	return nil
}

func (im *Image) readFile(buf []byte, off int64) error {
	return image.ReadFull(im.src.R, im.src.Size, buf, off, im.src.Path, format, "block data")
}

func (im *Image) readParent(buf []byte, off int64) error {
	return image.ReadParent(im.parent, buf, off, im.src.Path, format)
}

// Size is the virtual size.
func (im *Image) Size() int64 { return im.size }

// kind classifies a payload block for Extent: 0 zero, 1 data, 2 parent.
func (im *Image) kind(bi int64) int {
	switch im.bat[im.batIndex(bi)] & 7 {
	case stateFullyPresent, statePartial:
		return 1
	case stateNotPresent:
		if im.parent != nil {
			return 2
		}
	}
	return 0
}

// Extent reports blocks that read as zeros as zero runs (in a differencing
// disk, blocks that come from the parent as the parent reports them).
func (im *Image) Extent(off, n int64) (image.Extent, error) {
	if off < 0 || off >= im.size {
		return image.Extent{}, io.EOF
	}
	n = min(n, im.size-off)
	bi := off / im.blockSize
	k := im.kind(bi)
	end := min((bi+1)*im.blockSize, off+n)
	if k == 2 {
		return image.ParentExtent(im.parent, off, end-off, im.src.Path, format)
	}
	if e := im.bat[im.batIndex(bi)]; e&7 == stateFullyPresent {
		// A block of a fixed image never written is a hole of the file.
		if h := image.HoleAt(im.src.Fd, int64(e>>20<<20)+off%im.blockSize, end-off); h > 0 {
			return image.Extent{Start: off, Length: h, Zero: true}, nil
		}
		return image.Extent{Start: off, Length: end - off}, nil
	}
	for end < off+n && im.kind(end/im.blockSize) == k {
		end = min(end+im.blockSize, off+n)
	}
	return image.Extent{Start: off, Length: end - off, Zero: k == 0}, nil
}

// Info describes the image.
func (im *Image) Info() image.Info {
	sub := "dynamic"
	if im.leaveAlloc {
		sub = "fixed"
	}
	if im.hasParent {
		sub = "differencing"
	}
	info := image.Info{
		Format:      format,
		Subformat:   sub,
		VirtualSize: im.size,
		ClusterSize: im.blockSize,
		Path:        im.src.Path,
	}
	add := func(name, value string) { info.Fields = append(info.Fields, image.Field{Name: name, Value: value}) }
	add("creator", im.creator)
	add("disk type", sub)
	add("block size", fmt.Sprint(im.blockSize))
	add("logical sector size", fmt.Sprint(im.logicalSect))
	add("physical sector size", fmt.Sprint(im.physicalSect))
	add("virtual disk ID", im.diskID.String())
	add("data write GUID", im.hdr.DataWriteGUID.String())
	if im.replayed > 0 {
		add("log", fmt.Sprintf("%d entries replayed in memory", im.replayed))
	}
	for _, w := range im.warnings {
		add("warning", w)
	}
	if im.hasParent {
		info.BackingFile = im.parentName
		add("parent", im.parentName)
		add("parent linkage", im.locator["parent_linkage"])
		if im.parent != nil {
			b := im.parent.Info()
			info.Backing = &b
		}
	}
	return info
}

// Files is every file of the parent chain (the caller holds this one's).
func (im *Image) Files() []*os.File { return image.Files(im.parent) }

// Close closes the parent; the file belongs to the caller.
func (im *Image) Close() error {
	if im.parent != nil {
		return im.parent.Close()
	}
	return nil
}
