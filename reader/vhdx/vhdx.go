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
	fact := func(name string, v any, text ...string) {
		info.Fields = append(info.Fields, image.Fact(name, v, text...))
	}
	add("creator", im.creator)
	add("disk type", sub)
	fact("block size", im.blockSize)
	fact("logical sector size", im.logicalSect)
	fact("physical sector size", im.physicalSect)
	add("virtual disk ID", im.diskID.String())
	add("data write GUID", im.hdr.DataWriteGUID.String())
	if im.replayed > 0 {
		fact("log entries replayed", im.replayed, fmt.Sprintf("%d (in memory)", im.replayed))
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
