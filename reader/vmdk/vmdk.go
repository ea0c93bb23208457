// Package vmdk reads VMware virtual disks, written from VMware's "Virtual
// Disk Format 1.1" specification and checked against qemu-img:
//
//   - a hosted sparse extent file (KDMV magic, versions 1 to 3, any power-of-
//     two grain size, zeroed-grain entries, redundant grain directory,
//     embedded descriptor): monolithicSparse;
//   - stream-optimized extents: deflate-compressed grains behind markers, the
//     grain directory in the header or in the footer at the end of the file;
//   - a text descriptor naming extents: monolithicFlat, twoGbMaxExtentSparse,
//     twoGbMaxExtentFlat, vmfs / vmfsThin (descriptor + -flat.vmdk), any mix
//     of FLAT, VMFS, SPARSE and ZERO extents;
//   - delta disks (parentFileNameHint), read through their parent chain when
//     the options allow backing files.
//
// Extent and parent file names are resolved with image.ResolvePath, so they
// stay inside the descriptor's folder unless the user allowed another.
// Extent files are opened directly, never through format detection: a flat
// extent holds guest bytes, which may look like any format.
//
// ReadAt is safe for concurrent use: grain tables sit in a bounded cache
// behind a mutex, and each call inflates only the grains it covers, with
// pooled decoders, so the stream workers decode grains in parallel.
package vmdk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"vmimport/reader/image"
)

// Image is an opened VMDK disk.
type Image struct {
	path   string
	size   int64
	exts   []placed
	parent image.Image
	desc   *descriptor // nil for a sparse file without an embedded descriptor
	first  *sparseExtent
	files  []*image.File // extent files
}

var _ image.Image = (*Image)(nil)

// extent is one piece of the disk; offsets are relative to its start.
type extent interface {
	readAt(p []byte, off int64, hole func(p []byte, off int64) error) error
	status(off, n int64) (int64, int, error)
}

type placed struct {
	start, length int64
	e             extent
	line          string // as the descriptor says it, for Info
}

// Open opens the VMDK in src: a sparse extent file (KDMV) or a text
// descriptor. Files the image names are opened only when opts allow it.
func Open(src image.Source, opts *image.Options) (*Image, error) {
	if opts == nil {
		opts = &image.Options{}
	}
	if src.Size < 4 {
		return nil, image.WrongFormat("vmdk", "file too small")
	}
	head := make([]byte, 4)
	if err := image.ReadFull(src.R, src.Size, head, 0, src.Path, "vmdk", "magic"); err != nil {
		return nil, err
	}
	if string(head) == magicKDMV || string(head) == magicCOWD {
		return openSparseFile(src, opts)
	}
	if src.Size > maxDescSectors*sector {
		return nil, image.WrongFormat("vmdk", "a descriptor is smaller than 1 MiB")
	}
	text := make([]byte, src.Size)
	if err := image.ReadFull(src.R, src.Size, text, 0, src.Path, "vmdk", "descriptor"); err != nil {
		return nil, err
	}
	d, err := parseDescriptor(text, src.Path, 0)
	if err != nil {
		return nil, err
	}
	return openDescriptor(src, d, opts)
}

func openSparseFile(src image.Source, opts *image.Options) (*Image, error) {
	s, err := openSparse(src.R, src.Size, src.Path, opts)
	if err != nil {
		return nil, err
	}
	im := &Image{path: src.Path, size: s.h.virtualSize, first: s}
	if s.h.descAvailable {
		text := make([]byte, s.h.DescSize*sector)
		off := int64(s.h.DescOffset) * sector
		if err := image.ReadFull(src.R, src.Size, text, off, src.Path, "vmdk", "embedded descriptor"); err != nil {
			return nil, err
		}
		d, err := parseDescriptor(text, src.Path, off)
		if err != nil {
			return nil, err
		}
		if len(d.Keys) > 0 || len(d.Extents) > 0 {
			im.desc = d
		}
	}
	line := fmt.Sprintf("RW %d SPARSE (this file)", s.h.Capacity)
	im.exts = []placed{{start: 0, length: im.size, e: s, line: line}}
	if err := im.openParent(src, opts); err != nil {
		return nil, err
	}
	return im, nil
}

var knownCreateTypes = map[string]bool{
	"monolithicsparse": true, "monolithicflat": true, "twogbmaxextentsparse": true,
	"twogbmaxextentflat": true, "streamoptimized": true, "vmfs": true, "vmfsthin": true,
	"vmfspreallocated": true, "vmfseagerzeroedthick": true, "vmfsraw": true, "vmfsrdm": true,
	"vmfspassthroughrawdevicemap": true, "vmfsrawdevicemap": true, "custom": true,
}

func openDescriptor(src image.Source, d *descriptor, opts *image.Options) (_ *Image, err error) {
	ct := d.get("createType")
	switch lc := strings.ToLower(ct); {
	case ct == "":
		return nil, image.Corruptf(src.Path, "vmdk descriptor", -1, "no createType")
	case lc == "fulldevice" || lc == "partitioneddevice":
		return nil, image.Unsupportedf(src.Path, "vmdk descriptor", -1, "createType %q maps a host's physical disk: image the disk itself instead", ct)
	case lc == "vmfssparse" || lc == "sesparse":
		return nil, image.Unsupportedf(src.Path, "vmdk descriptor", -1, "createType %q (ESX snapshot extents) is not supported: consolidate the snapshot first", ct)
	case !knownCreateTypes[lc]:
		return nil, image.Unsupportedf(src.Path, "vmdk descriptor", -1, "unknown createType %q", ct)
	}
	if len(d.Extents) == 0 {
		return nil, image.Corruptf(src.Path, "vmdk descriptor", -1, "no extents")
	}
	im := &Image{path: src.Path, desc: d}
	defer func() {
		if err != nil {
			im.Close()
		}
	}()
	for _, de := range d.Extents {
		if im.size > image.MaxVirtualSize-de.Sectors*sector {
			return nil, image.Corruptf(src.Path, "vmdk descriptor", -1, "line %d: extents add up to more than the %d TiB limit", de.line, image.MaxVirtualSize>>40)
		}
		e, err := im.openExtent(src, de, opts)
		if err != nil {
			return nil, err
		}
		line := fmt.Sprintf("%s %d %s", de.Access, de.Sectors, de.Type)
		if de.File != "" {
			line += fmt.Sprintf(" %q", de.File)
			if de.Offset != 0 {
				line += fmt.Sprintf(" %d", de.Offset)
			}
		}
		im.exts = append(im.exts, placed{start: im.size, length: de.Sectors * sector, e: e, line: line})
		im.size += de.Sectors * sector
	}
	if err := im.openParent(src, opts); err != nil {
		return nil, err
	}
	return im, nil
}

func (im *Image) openExtent(src image.Source, de descExtent, opts *image.Options) (extent, error) {
	switch de.Access {
	case "RW", "RDONLY":
	default:
		return nil, image.Unsupportedf(src.Path, "vmdk descriptor", -1, "line %d: extent access %q: the extent cannot be read", de.line, de.Access)
	}
	switch de.Type {
	case "ZERO":
		return zeroExtent{}, nil
	case "FLAT", "VMFS", "VMFSRAW", "VMFSRDM", "SPARSE":
	default:
		return nil, image.Unsupportedf(src.Path, "vmdk descriptor", -1, "line %d: extent type %q is not supported", de.line, de.Type)
	}
	if opts.Open == nil {
		return nil, fmt.Errorf("%s: vmdk descriptor: line %d: extent %q: %w: this descriptor may not open other files here", src.Path, de.line, de.File, image.ErrNotAllowed)
	}
	p, err := image.ResolveName(src.Path, de.File, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: vmdk descriptor: line %d: extent: %w", src.Path, de.line, err)
	}
	f, err := image.OpenFile(p, opts)
	if err != nil {
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			return nil, fmt.Errorf("%s: vmdk descriptor: line %d: extent %d of %d: the open-file limit (ulimit -n %d) allows no more: %w", src.Path, de.line, len(im.files)+1, len(im.desc.Extents), image.FileLimit(), err)
		}
		return nil, fmt.Errorf("%s: vmdk descriptor: line %d: extent: %w", src.Path, de.line, err)
	}
	im.files = append(im.files, f)
	size := f.Size
	p = f.Path
	if de.Type == "SPARSE" {
		return openSparse(f.R, size, p, opts)
	}
	off := de.Offset * sector
	if !image.CheckRange(off, de.Sectors*sector, size) {
		return nil, image.Corruptf(p, "vmdk flat extent", -1, "holds %d bytes, but line %d of %s needs %d bytes from offset %d", size, de.line, src.Path, de.Sectors*sector, off)
	}
	return &flatExtent{r: f.R, fd: f.Fd, base: off, path: p}, nil
}

// openParent opens the parent of a delta disk through opts.Open, when the
// options allow backing files.
func (im *Image) openParent(src image.Source, opts *image.Options) error {
	if im.desc == nil {
		return nil
	}
	hint := im.desc.get("parentFileNameHint")
	pcid := strings.ToLower(im.desc.get("parentCID"))
	if hint == "" {
		if pcid != "" && pcid != "ffffffff" {
			opts.Warnf("%s: vmdk: parentCID is %s but no parentFileNameHint names the parent; reading the disk without it", im.path, pcid)
		}
		return nil
	}
	parent, _, err := image.OpenParent(src, opts, image.Parent{
		Format: "vmdk", Kind: "delta disk of parent", Names: []string{hint}, Offset: -1,
	})
	if err != nil {
		return err
	}
	im.parent = parent
	return nil
}

// ReadAt reads guest bytes; safe for concurrent use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("vmdk: negative offset")
	}
	n, short := image.Clip(off, len(p), im.size)
	if n == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	done := 0
	i := im.find(off)
	for done < n {
		x := im.exts[i]
		pos := off + int64(done)
		k := int(min(int64(n-done), x.start+x.length-pos))
		if err := x.e.readAt(p[done:done+k], pos-x.start, func(q []byte, eoff int64) error {
			return im.hole(q, x.start+eoff)
		}); err != nil {
			return done, err
		}
		done += k
		i++
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// find returns the index of the extent holding virtual offset off < size.
func (im *Image) find(off int64) int {
	return sort.Search(len(im.exts), func(i int) bool { return im.exts[i].start+im.exts[i].length > off })
}

// hole fills p with what an unallocated range at virtual offset off reads
// as: the parent's bytes in a delta disk, zeros otherwise.
func (im *Image) hole(p []byte, off int64) error {
	return image.ReadParent(im.parent, p, off, im.path, "vmdk")
}

// Size is the virtual size.
func (im *Image) Size() int64 { return im.size }

// Extent reports ZERO extents, unallocated grains (without a parent) and
// zeroed grains as zero runs, and holes in flat extent files too.
func (im *Image) Extent(off, n int64) (image.Extent, error) {
	if off < 0 || off >= im.size {
		return image.Extent{}, io.EOF
	}
	n = min(n, im.size-off)
	if n <= 0 {
		return image.Extent{}, io.EOF
	}
	x := im.exts[im.find(off)]
	n = min(n, x.start+x.length-off)
	k, class, err := x.e.status(off-x.start, n)
	if err != nil {
		return image.Extent{}, err
	}
	if k <= 0 {
		k = n
	}
	switch class {
	case classZero:
		return image.Extent{Start: off, Length: k, Zero: true}, nil
	case classHole:
		return image.ParentExtent(im.parent, off, k, im.path, "vmdk")
	}
	return image.Extent{Start: off, Length: k}, nil
}

// Info describes the disk: create type, extents, grain size, compression,
// hardware version, adapter type, and the parent chain.
func (im *Image) Info() image.Info {
	info := image.Info{Format: "vmdk", VirtualSize: im.size, Path: im.path}
	var f []image.Field
	add := func(name, value string) {
		if value != "" {
			f = append(f, image.Field{Name: name, Value: value})
		}
	}
	// A number from the descriptor, typed when it is one.
	addNumber := func(name, value string) {
		if n, err := strconv.ParseInt(value, 10, 64); err == nil {
			f = append(f, image.Fact(name, n, value))
		} else {
			add(name, value)
		}
	}
	if im.desc != nil {
		info.Subformat = im.desc.get("createType")
	}
	s := im.first
	if s == nil {
		for _, x := range im.exts {
			if sp, ok := x.e.(*sparseExtent); ok {
				s = sp
				break
			}
		}
	}
	if info.Subformat == "" && s != nil {
		info.Subformat = s.h.subformat()
	}
	add("create type", info.Subformat)
	if s != nil {
		info.ClusterSize = s.h.grainBytes
		f = append(f, image.Fact("sparse version", s.h.Version),
			image.Fact("grain size", s.h.grainBytes, fmt.Sprintf("%d bytes (%d sectors)", s.h.grainBytes, s.h.GrainSize)))
		if s.h.compressed {
			info.Compression = "deflate"
		}
		if s.footer {
			add("grain directory", "in the footer")
		}
		if s.h.zeroedGrain {
			f = append(f, image.Fact("zeroed grains", true, "yes (GTE 1 reads as zeros)"))
		}
		if s.h.Unclean {
			f = append(f, image.Fact("unclean shutdown", true, "yes"))
		}
	}
	for i, x := range im.exts {
		if i == 32 {
			add("extents", fmt.Sprintf("... and %d more", len(im.exts)-32))
			break
		}
		add(fmt.Sprintf("extent %d", i), x.line)
	}
	if im.desc != nil {
		addNumber("hardware version", im.desc.get("ddb.virtualHWVersion"))
		add("adapter type", im.desc.get("ddb.adapterType"))
		if c := im.desc.get("ddb.geometry.cylinders"); c != "" {
			cyl, err1 := strconv.ParseInt(c, 10, 64)
			heads, err2 := strconv.ParseInt(im.desc.get("ddb.geometry.heads"), 10, 64)
			secs, err3 := strconv.ParseInt(im.desc.get("ddb.geometry.sectors"), 10, 64)
			if err1 == nil && err2 == nil && err3 == nil {
				f = append(f, image.Geometry(cyl, heads, secs))
			} else {
				add("geometry (C/H/S)", c+"/"+im.desc.get("ddb.geometry.heads")+"/"+im.desc.get("ddb.geometry.sectors"))
			}
		}
		add("tools version", im.desc.get("ddb.toolsVersion"))
		add("CID", im.desc.get("CID"))
		if p := im.desc.get("parentCID"); p != "" && !strings.EqualFold(p, "ffffffff") {
			add("parent CID", p)
		}
		add("UUID", im.desc.get("ddb.uuid"))
		info.BackingFile = im.desc.get("parentFileNameHint")
	}
	if im.parent != nil {
		b := im.parent.Info()
		info.Backing = &b
	}
	info.Fields = f
	return info
}

// Files is the extent files and every file of the parent chain (the caller
// holds the descriptor's).
func (im *Image) Files() []*os.File {
	var fs []*os.File
	for _, f := range im.files {
		if f.OS != nil {
			fs = append(fs, f.OS)
		}
	}
	return append(fs, image.Files(im.parent)...)
}

// Close closes the extent files and the parent chain; the file the image
// was opened from belongs to the caller.
func (im *Image) Close() error {
	var err error
	for _, f := range im.files {
		if e := f.Close(); err == nil {
			err = e
		}
	}
	im.files = nil
	if im.parent != nil {
		if e := im.parent.Close(); err == nil {
			err = e
		}
		im.parent = nil
	}
	return err
}

// zeroExtent is a ZERO extent: it reads as zeros and has no file.
type zeroExtent struct{}

func (zeroExtent) readAt(p []byte, _ int64, _ func([]byte, int64) error) error {
	clear(p)
	return nil
}

func (zeroExtent) status(_, n int64) (int64, int, error) { return n, classZero, nil }

// flatExtent is a preallocated extent: the bytes of a file from an offset.
type flatExtent struct {
	r    io.ReaderAt
	fd   int
	base int64
	path string
}

func (f *flatExtent) readAt(p []byte, off int64, _ func([]byte, int64) error) error {
	n, err := f.r.ReadAt(p, f.base+off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // the file shrank under us
	}
	return fmt.Errorf("%s: vmdk flat extent: reading at offset %d: %w", f.path, f.base+off, err)
}

// status finds holes in the flat file with SEEK_DATA / SEEK_HOLE.
func (f *flatExtent) status(off, n int64) (int64, int, error) {
	if f.fd < 0 {
		return n, classData, nil
	}
	k, hole := image.FileExtent(f.fd, f.base+off, n)
	if hole {
		return k, classZero, nil
	}
	return k, classData, nil
}
