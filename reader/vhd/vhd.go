// Package vhd reads Microsoft VHD images (Virtual PC, Hyper-V, Azure,
// Disk2vhd, qemu "vpc"): fixed, dynamic and differencing disks, written from
// Microsoft's "Virtual Hard Disk Image Format Specification" and checked
// against qemu-img.
//
// Behaviour chosen to match qemu-img, so the same file gives the same bytes:
//
//   - The virtual size is the CHS geometry (cylinders x heads x sectors x 512)
//     for images made by Virtual PC ("vpc ") or by qemu without force_size
//     ("qemu"), unless the geometry is the largest one (65535/16/255); for
//     every other creator it is the footer's current size. See
//     footer.virtualSize.
//   - In a dynamic disk the per-block sector bitmap is ignored: an allocated
//     block reads as the bytes stored in it, as qemu reads it. In a
//     differencing disk the bitmap decides, sector by sector, whether the
//     child or the parent holds the data, as the specification says.
//
// Both footer copies are checked: the one in the last 512 bytes is the
// primary; when it is damaged and the copy at offset 0 (dynamic and
// differencing disks only) is sound, the copy is used with a warning.
package vhd

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
	"vmimport/reader/raw"
)

const format = "vhd"

// Image is an opened VHD.
type Image struct {
	src       image.Source
	f         *footer
	footerAt  int64 // where the footer used lies: the end, or 0 for the backup copy
	footerLen int64
	h         *dynHeader // nil for fixed disks
	size      int64
	sizeRule  string
	fixed     *raw.Image // fixed disks: the data is the file's first size bytes

	blockSize  int64
	bitmapSize int64
	bat        []uint32 // one entry per block of the virtual size

	parent     image.Image // differencing disks
	parentName string      // as the child names it
	warnings   []string
}

var _ image.Image = (*Image)(nil)

// Open opens the VHD in src. A differencing disk's parent is opened through
// opts.Open, only when opts.AllowBacking is set.
func Open(src image.Source, opts *image.Options) (*Image, error) {
	f, warn, footerLen, footerAt, err := readFooter(src)
	if err != nil {
		return nil, err
	}
	im := &Image{src: src, f: f, footerAt: footerAt, footerLen: footerLen}
	if warn != "" {
		opts.Warnf("%s: vhd: %s", src.Path, warn)
		im.warnings = append(im.warnings, warn)
	}
	im.size, im.sizeRule = f.virtualSize()
	if im.size > image.MaxVirtualSize || im.size/512 >= maxSectors {
		if im.sizeRule == "current size" {
			return nil, image.Corruptf(src.Path, format, footerAt+48, "current size %d is larger than the VHD limit of 2040 GiB (%d bytes)", f.CurrentSize, int64(maxSectors)*512)
		}
		return nil, image.Corruptf(src.Path, format, footerAt+56, "CHS geometry %d/%d/%d (%d bytes) is larger than the VHD limit of 2040 GiB (%d bytes)", f.Cylinders, f.Heads, f.SectorsPerCyl, im.size, int64(maxSectors)*512)
	}
	if f.DiskType == typeFixed {
		if im.size > src.Size-footerLen {
			return nil, image.Corruptf(src.Path, format, footerAt+48, "fixed disk of %d bytes (by %s) needs a file of %d bytes, the file has %d: a truncated VHD", im.size, im.sizeRule, im.size+footerLen, src.Size)
		}
		fs := src
		fs.Size = im.size
		im.fixed, err = raw.Open(fs, "fixed")
		if err != nil {
			return nil, err
		}
		return im, nil
	}
	if err := im.openDynamic(); err != nil {
		return nil, err
	}
	if f.DiskType == typeDifferencing {
		if err := im.openParent(opts); err != nil {
			return nil, err
		}
	}
	return im, nil
}

// openDynamic reads the dynamic disk header and the BAT.
func (im *Image) openDynamic() error {
	src, f := im.src, im.f
	if f.DataOffset > uint64(src.Size) || !image.CheckRange(int64(f.DataOffset), dynHeaderSize, src.Size) {
		return image.Corruptf(src.Path, format, im.footerAt+16, "dynamic disk header offset %d lies past the end of the file (%d bytes)", f.DataOffset, src.Size)
	}
	hoff := int64(f.DataOffset)
	b := make([]byte, dynHeaderSize)
	if err := image.ReadFull(src.R, src.Size, b, hoff, src.Path, format, "dynamic disk header"); err != nil {
		return err
	}
	h, at, rule := parseDynHeader(b)
	if rule != "" {
		return image.Corruptf(src.Path, format, hoff+int64(at), "%s", rule)
	}
	im.h = h
	im.blockSize = int64(h.BlockSize)
	im.bitmapSize = h.bitmapSize()
	blocks := (im.size + im.blockSize - 1) / im.blockSize
	if int64(h.MaxTableEntries) < blocks {
		return image.Corruptf(src.Path, format, hoff+28, "BAT of %d entries of %d bytes covers less than the %d-byte disk", h.MaxTableEntries, im.blockSize, im.size)
	}
	if h.TableOffset > uint64(src.Size) || !image.CheckRange(int64(h.TableOffset), blocks*4, src.Size) {
		return image.Corruptf(src.Path, format, hoff+16, "BAT (%d entries at offset %d) lies past the end of the file (%d bytes)", blocks, h.TableOffset, src.Size)
	}
	raw := make([]byte, blocks*4)
	if err := image.ReadFull(src.R, src.Size, raw, int64(h.TableOffset), src.Path, format, "BAT"); err != nil {
		return err
	}
	im.bat = make([]uint32, blocks)
	meta := im.metadata(blocks)
	span := im.bitmapSize + im.blockSize // a block: its sector bitmap, then its data
	var used []uint32                    // indices of allocated blocks
	for i := range im.bat {
		e := binary.BigEndian.Uint32(raw[4*i:])
		im.bat[i] = e
		if e == batUnused {
			continue
		}
		at, off := int64(h.TableOffset)+4*int64(i), int64(e)*512
		if !image.CheckRange(off, span, src.Size) {
			return image.Corruptf(src.Path, format, at, "BAT entry %d is sector %d: its block (%d bytes with the sector bitmap) at offset %d passes the end of the file (%d bytes)", i, e, span, off, src.Size)
		}
		if r, ok := meta.Overlap(off, span); ok {
			return image.Corruptf(src.Path, format, at, "BAT entry %d is sector %d: its block [%d, %d) overlaps the %s: data may not lie on the image's own structures", i, e, off, off+span, r)
		}
		used = append(used, uint32(i))
	}
	// Two entries whose blocks overlap would make two parts of the disk
	// share bytes: sort the blocks by place and compare neighbours.
	slices.SortFunc(used, func(a, b uint32) int { return cmp.Compare(im.bat[a], im.bat[b]) })
	for k := 1; k < len(used); k++ {
		i, j := used[k-1], used[k]
		if int64(im.bat[j]-im.bat[i])*512 < span {
			return image.Corruptf(src.Path, format, int64(h.TableOffset)+4*int64(j), "BAT entries %d and %d are sectors %d and %d: their %d-byte blocks overlap", i, j, im.bat[i], im.bat[j], span)
		}
	}
	return nil
}

// metadata lists the structures of a dynamic or differencing VHD that no
// block may overlap: both footer copies, the dynamic disk header, the BAT
// (the part that maps the disk) and the parent locators' data.
func (im *Image) metadata(blocks int64) *image.Regions {
	var r image.Regions
	r.Add(0, footerSize, "footer copy at offset 0")
	if im.footerAt > 0 {
		r.Add(im.footerAt, im.footerLen, "footer")
	}
	r.Add(int64(im.f.DataOffset), dynHeaderSize, "dynamic disk header")
	r.Add(int64(im.h.TableOffset), (blocks*4+511)/512*512, "BAT")
	if im.f.DiskType == typeDifferencing {
		for i, l := range im.h.Locators {
			if l.Code != [4]byte{} && l.DataLength > 0 && l.DataOffset < uint64(im.src.Size) {
				r.Add(int64(l.DataOffset), int64(l.DataLength), fmt.Sprintf("parent locator %d", i))
			}
		}
	}
	r.Seal()
	return &r
}

// openParent finds, checks and opens the parent of a differencing disk:
// the parent must be a VHD whose UUID is the child's parent UUID.
func (im *Image) openParent(opts *image.Options) error {
	names := im.parentNames()
	p, name, err := image.OpenParent(im.src, opts, image.Parent{
		Format: format, Kind: "differencing disk with parent", Names: names, Offset: int64(im.f.DataOffset) + 40,
		IDs: []string{uuidString(im.h.ParentUUID)}, IDName: "UUID",
	})
	im.parentName = name
	if name == "" {
		im.parentName = im.h.ParentName
	}
	if err != nil {
		return err
	}
	im.parent = p
	return nil
}

// Identity is the footer's UUID, which a differencing child records.
func (im *Image) Identity() (string, string) { return format, uuidString(im.f.UUID) }

// parentNames lists the parent file names a differencing disk records,
// best first: the relative Windows locator ("W2ru"), the absolute one
// ("W2ku") and the Mac ones when they name a file next to the child, and
// last the bare parent name of the header.
func (im *Image) parentNames() []string {
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		n = strings.TrimRight(n, "\x00")
		if n == "" || seen[n] {
			return
		}
		seen[n] = true
		names = append(names, n)
	}
	order := []string{"W2ru", "W2ku", "MacX", "Mac "}
	for _, code := range order {
		for _, l := range im.h.Locators {
			if string(l.Code[:]) != code || l.DataLength == 0 || l.DataLength > 64<<10 {
				continue
			}
			if !image.CheckRange(int64(l.DataOffset), int64(l.DataLength), im.src.Size) || l.DataOffset > uint64(im.src.Size) {
				continue
			}
			b := make([]byte, l.DataLength)
			if _, err := im.src.R.ReadAt(b, int64(l.DataOffset)); err != nil {
				continue
			}
			var n string
			switch code {
			case "W2ru", "W2ku":
				n = windowsPath(utf16String(b, false))
			default:
				n = strings.TrimPrefix(strings.TrimRight(string(b), "\x00"), "file://")
			}
			add(n)
		}
	}
	add(windowsPath(im.h.ParentName))
	return names
}

// windowsPath turns ".\dir\parent.vhd" into "dir/parent.vhd". A path with a
// drive letter or a UNC path cannot be found here and is dropped.
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
		return 0, errors.New("vhd: negative offset")
	}
	if im.fixed != nil {
		return im.fixed.ReadAt(p, off)
	}
	n, short := image.Clip(off, len(p), im.size)
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	var bitmap []byte
	for done := 0; done < n; {
		pos := off + int64(done)
		bi := pos / im.blockSize
		in := pos % im.blockSize
		k := int(min(int64(n-done), im.blockSize-in))
		buf := p[done : done+k]
		e := im.bat[bi]
		switch {
		case e == batUnused && im.parent == nil:
			clear(buf)
		case e == batUnused:
			if err := im.readParent(buf, pos); err != nil {
				return done, err
			}
		case im.parent == nil:
			if err := im.readFile(buf, int64(e)*512+im.bitmapSize+in); err != nil {
				return done, err
			}
		default:
			if bitmap == nil {
				bitmap = make([]byte, im.bitmapSize)
			}
			if err := im.readFile(bitmap, int64(e)*512); err != nil {
				return done, err
			}
			if err := im.readMixed(buf, pos, int64(e)*512+im.bitmapSize, bitmap); err != nil {
				return done, err
			}
		}
		done += k
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// readMixed fills buf (inside one block) sector run by sector run from the
// child where the block's bitmap bit is set, from the parent elsewhere.
// Bits are numbered from the most significant bit of byte 0.
func (im *Image) readMixed(buf []byte, pos, dataOff int64, bitmap []byte) error {
	blockStart := pos / im.blockSize * im.blockSize
	bit := func(s int64) bool { return bitmap[s/8]&(0x80>>(s%8)) != 0 }
	for done := 0; done < len(buf); {
		p := pos + int64(done)
		s := (p - blockStart) / 512
		set := bit(s)
		end := (s + 1) * 512
		for end < im.blockSize && end-(p-blockStart) < int64(len(buf)-done) && bit(end/512) == set {
			end += 512
		}
		k := int(min(end-(p-blockStart), int64(len(buf)-done)))
		var err error
		if set {
			err = im.readFile(buf[done:done+k], dataOff+(p-blockStart))
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

// readParent reads from the parent; past the parent's end the disk reads
// as zeros.
func (im *Image) readParent(buf []byte, off int64) error {
	return image.ReadParent(im.parent, buf, off, im.src.Path, format)
}

// Size is the virtual size.
func (im *Image) Size() int64 { return im.size }

// Extent reports unallocated blocks as zero runs (in a differencing disk,
// as the parent reports them).
func (im *Image) Extent(off, n int64) (image.Extent, error) {
	if off < 0 || off >= im.size {
		return image.Extent{}, io.EOF
	}
	n = min(n, im.size-off)
	if im.fixed != nil {
		return im.fixed.Extent(off, n)
	}
	bi := off / im.blockSize
	alloc := im.bat[bi] != batUnused
	end := min((bi+1)*im.blockSize, off+n)
	if !alloc && im.parent != nil {
		return image.ParentExtent(im.parent, off, end-off, im.src.Path, format)
	}
	for end < off+n && (im.bat[end/im.blockSize] != batUnused) == alloc {
		end = min(end+im.blockSize, off+n)
	}
	return image.Extent{Start: off, Length: end - off, Zero: !alloc}, nil
}

// Info describes the image.
func (im *Image) Info() image.Info {
	f := im.f
	info := image.Info{
		Format:      format,
		Subformat:   f.diskTypeName(),
		VirtualSize: im.size,
		ClusterSize: im.blockSize,
		Path:        im.src.Path,
	}
	add := func(name, value string) { info.Fields = append(info.Fields, image.Field{Name: name, Value: value}) }
	add("creator", fmt.Sprintf("%q version %d.%d on %s", printable(f.CreatorApp[:]), f.CreatorVersion>>16, f.CreatorVersion&0xffff, hostOS(f.CreatorOS)))
	add("disk type", f.diskTypeName())
	info.Fields = append(info.Fields, image.Geometry(int64(f.Cylinders), int64(f.Heads), int64(f.SectorsPerCyl)),
		image.Fact("current size", f.CurrentSize))
	add("size rule", im.sizeRule)
	if im.h != nil {
		info.Fields = append(info.Fields, image.Fact("block size", im.blockSize))
	}
	add("UUID", uuidString(f.UUID))
	if f.SavedState != 0 {
		info.Fields = append(info.Fields, image.Fact("saved state", true, "yes"))
	}
	for _, w := range im.warnings {
		add("warning", w)
	}
	if f.DiskType == typeDifferencing {
		info.BackingFile = im.parentName
		add("parent", im.parentName)
		add("parent UUID", uuidString(im.h.ParentUUID))
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
