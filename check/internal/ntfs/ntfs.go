// Package ntfs reads an NTFS file system for the import check, read-only
// and bounded: the boot sector, MFT records (update sequence fixups,
// $ATTRIBUTE_LIST extensions, a fragmented $MFT), resident and
// non-resident attributes (data runs, sparse runs, the initialized size),
// directory lookup by name through $INDEX_ROOT and $INDEX_ALLOCATION
// (the B+tree of $I30, descended, not scanned), case-insensitively as
// Windows does, the volume's flags ($Volume) and its use ($Bitmap).
// Compressed and encrypted files are not read (ErrUnsupported): the
// system files the check reads (registry hives, cmd.exe, hiberfil.sys) are
// never compressed.
//
// Every field is checked before it is used, against the volume and the
// limits below; the records and index blocks one FS reads are counted, so
// a corrupt volume ends in an error naming the record and the rule
// broken, never a loop or an allocation sized by a header field.
package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
	"unicode"
	"unicode/utf16"
)

// Well-known MFT records.
const (
	recMFT    = 0
	recVolume = 3
	recRoot   = 5
	recBitmap = 6
)

// Attribute types.
const (
	attrList       = 0x20
	attrFileName   = 0x30
	attrVolInfo    = 0x70
	attrData       = 0x80
	attrIndexRoot  = 0x90
	attrIndexAlloc = 0xa0
	attrEnd        = 0xffffffff
)

// Limits.
const (
	// MaxRecords is how many MFT records one FS reads in all.
	MaxRecords = 1 << 16
	// MaxIndexBlocks is how many index blocks one FS reads in all.
	MaxIndexBlocks = 1 << 14
	// MaxMetadata is how many bytes of MFT records and index blocks one
	// FS reads in all (a check reads some hundred KiB).
	MaxMetadata   = 64 << 20
	maxRuns       = 1 << 16
	maxAttrList   = 256 << 10
	maxExtensions = 256
	maxDepth      = 32
	maxPath       = 64
	maxDirEntries = 1 << 17
)

var (
	// ErrNotFound: no such file.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt marks a structure that breaks the format.
	ErrCorrupt = errors.New("corrupt NTFS")
	// ErrUnsupported marks what the reader does not read (compressed or
	// encrypted files).
	ErrUnsupported = errors.New("not supported by the NTFS reader")
)

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// FS is an open NTFS volume.
type FS struct {
	r        io.ReaderAt
	size     int64
	cluster  int64
	clusters int64 // clusters in the volume
	recSize  int64
	mft      *stream
	records  int
	blocks   int
	meta     int64
	// Serial is the volume serial number.
	Serial uint64
}

// Open reads the boot sector and the $MFT's own record of the size-byte
// volume in r.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	b := make([]byte, 512)
	if n, err := r.ReadAt(b, 0); n < len(b) {
		return nil, fmt.Errorf("reading the boot sector: %w", orEOF(err))
	}
	if string(b[3:11]) != "NTFS    " {
		return nil, corrupt("no NTFS OEM id at offset 3")
	}
	le := binary.LittleEndian
	bps := int64(le.Uint16(b[0x0b:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return nil, corrupt("%d bytes per sector at offset 0x0b", bps)
	}
	spc := int64(b[0x0d])
	if spc > 0x80 {
		if 256-spc > 12 {
			return nil, corrupt("sectors per cluster 0x%x at offset 0x0d", b[0x0d])
		}
		spc = 1 << (256 - spc)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, corrupt("%d sectors per cluster at offset 0x0d", spc)
	}
	fs := &FS{r: r, size: size, cluster: bps * spc, Serial: le.Uint64(b[0x48:])}
	if fs.cluster > 2<<20 {
		return nil, corrupt("clusters of %d bytes", fs.cluster)
	}
	sectors := le.Uint64(b[0x28:])
	if sectors == 0 || sectors > uint64(size/bps)+1 {
		return nil, corrupt("%d sectors at offset 0x28 do not fit the %d-byte partition", sectors, size)
	}
	fs.clusters = int64(sectors) * bps / fs.cluster
	fs.recSize = recordSize(int8(b[0x40]), fs.cluster)
	if fs.recSize < 512 || fs.recSize > 64<<10 || fs.recSize&(fs.recSize-1) != 0 {
		return nil, corrupt("MFT records of %d bytes (offset 0x40)", fs.recSize)
	}
	mftLCN := le.Uint64(b[0x30:])
	if mftLCN == 0 || mftLCN >= uint64(fs.clusters) {
		return nil, corrupt("$MFT at cluster %d (offset 0x30), outside the %d clusters", mftLCN, fs.clusters)
	}
	// Bootstrap: record 0 read from the $MFT's first cluster, then its
	// $DATA runs (with the extensions its attribute list names).
	fs.mft = &stream{fs: fs, runs: []run{{vcn: 0, n: max(1, fs.recSize/fs.cluster), lcn: int64(mftLCN)}}, size: fs.recSize, init: fs.recSize}
	rec, err := fs.record(recMFT)
	if err != nil {
		return nil, fmt.Errorf("$MFT: %w", err)
	}
	var data *attr
	for i := range rec.attrs {
		if a := &rec.attrs[i]; a.typ == attrData && a.name == "" {
			data = a
			break
		}
	}
	if data == nil || !data.nonres || data.startVCN != 0 {
		return nil, corrupt("$MFT (record 0) has no non-resident $DATA starting at VCN 0")
	}
	fs.mft = &stream{fs: fs, runs: data.runs, size: data.dataSize, init: data.initSize}
	s, err := fs.dataOf(rec, attrData, "")
	if err != nil {
		return nil, fmt.Errorf("$MFT: %w", err)
	}
	fs.mft = s
	return fs, nil
}

func recordSize(c int8, cluster int64) int64 {
	if c > 0 {
		return int64(c) * cluster
	}
	if c < -30 || c == 0 {
		return 0
	}
	return 1 << uint(-c)
}

func orEOF(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// fixup applies the update sequence array of a multi-sector record (FILE
// or INDX) in place.
func fixup(b []byte, what string) error {
	le := binary.LittleEndian
	off, count := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if count == 0 || count-1 != len(b)/512 || off+2*count > len(b) || off < 8 {
		return corrupt("%s: update sequence array of %d at offset %d does not fit %d bytes", what, count, off, len(b))
	}
	usn := b[off : off+2]
	for i := 1; i < count; i++ {
		end := i*512 - 2
		if b[end] != usn[0] || b[end+1] != usn[1] {
			return corrupt("%s: sector %d does not end in the update sequence number (a torn write)", what, i-1)
		}
		b[end], b[end+1] = b[off+2*i], b[off+2*i+1]
	}
	return nil
}

// run is a data run: n clusters from VCN vcn at LCN lcn (-1: sparse).
type run struct{ vcn, n, lcn int64 }

// attr is one attribute of an MFT record.
type attr struct {
	typ      uint32
	name     string
	nonres   bool
	flags    uint16
	value    []byte // resident
	startVCN int64
	lastVCN  int64
	runs     []run
	dataSize int64
	initSize int64
}

// record is a parsed MFT record.
type record struct {
	num   int64
	flags uint16
	base  uint64
	attrs []attr
}

func (r *record) isDir() bool { return r.flags&0x2 != 0 }

// record reads MFT record num.
func (fs *FS) record(num int64) (*record, error) {
	fs.records++
	if fs.records > MaxRecords {
		return nil, corrupt("more than %d MFT records read", MaxRecords)
	}
	if fs.meta += fs.recSize; fs.meta > MaxMetadata {
		return nil, corrupt("more than %d bytes of MFT records and index blocks read", MaxMetadata)
	}
	if num < 0 || num >= fs.mft.size/fs.recSize {
		return nil, corrupt("record %d lies outside the $MFT (%d bytes)", num, fs.mft.size)
	}
	b := make([]byte, fs.recSize)
	if n, err := fs.mft.ReadAt(b, num*fs.recSize); n < len(b) {
		return nil, fmt.Errorf("MFT record %d: %w", num, orEOF(err))
	}
	if string(b[:4]) != "FILE" {
		return nil, corrupt("MFT record %d has no FILE signature", num)
	}
	what := fmt.Sprintf("MFT record %d", num)
	if err := fixup(b, what); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	rec := &record{num: num, flags: le.Uint16(b[0x16:]), base: le.Uint64(b[0x20:]) & (1<<48 - 1)}
	if rec.flags&1 == 0 {
		return nil, fmt.Errorf("MFT record %d is not in use: %w", num, ErrNotFound)
	}
	used := int(le.Uint32(b[0x18:]))
	if used > len(b) || used < 0x30 {
		used = len(b)
	}
	off := int(le.Uint16(b[0x14:]))
	for off+8 <= used {
		typ := le.Uint32(b[off:])
		if typ == attrEnd {
			break
		}
		alen := int(le.Uint32(b[off+4:]))
		if alen < 0x18 || off+alen > used || len(rec.attrs) >= 256 {
			return nil, corrupt("%s: attribute 0x%x at offset %d has the length %d", what, typ, off, alen)
		}
		a, err := parseAttr(b[off:off+alen], typ)
		if err != nil {
			return nil, fmt.Errorf("%s: attribute 0x%x at offset %d: %w", what, typ, off, err)
		}
		rec.attrs = append(rec.attrs, a)
		off += alen
	}
	return rec, nil
}

func parseAttr(b []byte, typ uint32) (attr, error) {
	le := binary.LittleEndian
	a := attr{typ: typ, nonres: b[8] != 0, flags: le.Uint16(b[0x0c:])}
	nameLen, nameOff := int(b[9]), int(le.Uint16(b[0x0a:]))
	if nameLen > 0 {
		if nameOff+2*nameLen > len(b) {
			return a, corrupt("the name passes the attribute")
		}
		a.name = utf16String(b[nameOff : nameOff+2*nameLen])
	}
	if !a.nonres {
		vlen, voff := int(le.Uint32(b[0x10:])), int(le.Uint16(b[0x14:]))
		if voff+vlen > len(b) || vlen < 0 {
			return a, corrupt("a resident value of %d bytes at %d passes the attribute", vlen, voff)
		}
		a.value = b[voff : voff+vlen]
		a.dataSize, a.initSize = int64(vlen), int64(vlen)
		return a, nil
	}
	if len(b) < 0x40 {
		return a, corrupt("a non-resident header of %d bytes", len(b))
	}
	a.startVCN, a.lastVCN = int64(le.Uint64(b[0x10:])), int64(le.Uint64(b[0x18:]))
	a.dataSize, a.initSize = int64(le.Uint64(b[0x30:])), int64(le.Uint64(b[0x38:]))
	if a.startVCN < 0 || a.lastVCN < a.startVCN-1 || a.dataSize < 0 || a.initSize < 0 || a.lastVCN > 1<<48 || a.dataSize > 1<<60 {
		return a, corrupt("VCNs %d..%d, sizes %d/%d", a.startVCN, a.lastVCN, a.dataSize, a.initSize)
	}
	roff := int(le.Uint16(b[0x20:]))
	if roff > len(b) {
		return a, corrupt("runs at offset %d pass the attribute", roff)
	}
	var err error
	a.runs, err = decodeRuns(b[roff:], a.startVCN)
	return a, err
}

// decodeRuns reads a mapping pairs array from VCN vcn.
func decodeRuns(b []byte, vcn int64) ([]run, error) {
	var runs []run
	lcn := int64(0)
	for i := 0; i < len(b) && b[i] != 0; {
		h := b[i]
		ls, os := int(h&0xf), int(h>>4)
		if ls == 0 || ls > 8 || os > 8 || i+1+ls+os > len(b) {
			return nil, corrupt("data run header 0x%02x at %d", h, i)
		}
		n := int64(0)
		for k := ls - 1; k >= 0; k-- {
			n = n<<8 | int64(b[i+1+k])
		}
		if n <= 0 || n > 1<<48 {
			return nil, corrupt("a data run of %d clusters", n)
		}
		r := run{vcn: vcn, n: n, lcn: -1}
		if os > 0 {
			d := int64(int8(b[i+ls+os])) // sign from the top byte
			for k := os - 2; k >= 0; k-- {
				d = d<<8 | int64(b[i+1+ls+k])
			}
			lcn += d
			if lcn < 0 {
				return nil, corrupt("a data run at cluster %d", lcn)
			}
			r.lcn = lcn
		}
		if len(runs) >= maxRuns {
			return nil, corrupt("more than %d data runs", maxRuns)
		}
		runs = append(runs, r)
		vcn += n
		i += 1 + ls + os
	}
	return runs, nil
}

func utf16String(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// stream reads a non-resident (or resident) attribute's bytes.
type stream struct {
	fs       *FS
	runs     []run
	resident []byte
	size     int64
	init     int64
	unsup    error
}

// ReadAt reads the attribute's bytes at off; like io.ReaderAt it returns
// io.EOF at the end.
func (s *stream) ReadAt(p []byte, off int64) (int, error) {
	if s.unsup != nil {
		return 0, s.unsup
	}
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > s.size-off {
		p = p[:s.size-off]
	}
	if s.resident != nil || s.runs == nil {
		n := 0
		if off < int64(len(s.resident)) {
			n = copy(p, s.resident[off:])
		}
		clear(p[n:])
		return s.done(len(p), want)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		chunk := p[n:]
		if pos >= s.init {
			clear(chunk)
			n = len(p)
			break
		}
		if int64(len(chunk)) > s.init-pos {
			chunk = chunk[:s.init-pos]
		}
		vcn := pos / s.fs.cluster
		i, _ := slices.BinarySearchFunc(s.runs, vcn, func(r run, v int64) int {
			switch {
			case r.vcn+r.n <= v:
				return -1
			case r.vcn > v:
				return 1
			}
			return 0
		})
		if i >= len(s.runs) || s.runs[i].vcn > vcn || s.runs[i].vcn+s.runs[i].n <= vcn {
			return n, corrupt("no data run maps cluster %d of a %d-byte attribute", vcn, s.size)
		}
		r := s.runs[i]
		inRun := pos - r.vcn*s.fs.cluster
		if left := r.n*s.fs.cluster - inRun; int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		if r.lcn < 0 {
			clear(chunk)
		} else {
			disk := r.lcn*s.fs.cluster + inRun
			if r.lcn+r.n > s.fs.clusters || disk+int64(len(chunk)) > s.fs.size {
				return n, corrupt("a data run at clusters %d+%d passes the volume (%d clusters)", r.lcn, r.n, s.fs.clusters)
			}
			if m, err := s.fs.r.ReadAt(chunk, disk); m < len(chunk) {
				return n + m, fmt.Errorf("reading %d bytes at offset %d: %w", len(chunk), disk, orEOF(err))
			}
		}
		n += len(chunk)
	}
	return s.done(n, want)
}

func (s *stream) done(n, want int) (int, error) {
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// attrs returns the record's attributes with those of its extension
// records (named by an $ATTRIBUTE_LIST).
func (fs *FS) attrs(rec *record) ([]attr, error) {
	var list *attr
	for i := range rec.attrs {
		if rec.attrs[i].typ == attrList {
			list = &rec.attrs[i]
		}
	}
	if list == nil {
		return rec.attrs, nil
	}
	var lb []byte
	if list.nonres {
		if list.dataSize > maxAttrList {
			return nil, corrupt("MFT record %d: an attribute list of %d bytes", rec.num, list.dataSize)
		}
		lb = make([]byte, list.dataSize)
		s := &stream{fs: fs, runs: list.runs, size: list.dataSize, init: list.initSize}
		if n, err := s.ReadAt(lb, 0); n < len(lb) {
			return nil, fmt.Errorf("MFT record %d: attribute list: %w", rec.num, orEOF(err))
		}
	} else {
		lb = list.value
	}
	out := slices.Clone(rec.attrs)
	seen := map[int64]bool{rec.num: true}
	le := binary.LittleEndian
	for off := 0; off+0x1a <= len(lb); {
		elen := int(le.Uint16(lb[off+4:]))
		if elen < 0x1a || off+elen > len(lb) {
			return nil, corrupt("MFT record %d: attribute list entry of %d bytes at %d", rec.num, elen, off)
		}
		ref := int64(le.Uint64(lb[off+0x10:]) & (1<<48 - 1))
		off += elen
		if seen[ref] {
			continue
		}
		seen[ref] = true
		if len(seen) > maxExtensions {
			return nil, corrupt("MFT record %d: more than %d extension records", rec.num, maxExtensions)
		}
		ext, err := fs.record(ref)
		if err != nil {
			return nil, fmt.Errorf("MFT record %d: extension: %w", rec.num, err)
		}
		if int64(ext.base) != rec.num {
			return nil, corrupt("MFT record %d, named by the attribute list of record %d, belongs to record %d", ref, rec.num, ext.base)
		}
		out = append(out, ext.attrs...)
	}
	return out, nil
}

// dataOf joins the pieces of an attribute (by type and name) across the
// record and its extensions into one stream.
func (fs *FS) dataOf(rec *record, typ uint32, name string) (*stream, error) {
	all, err := fs.attrs(rec)
	if err != nil {
		return nil, err
	}
	var pieces []*attr
	for i := range all {
		if a := &all[i]; a.typ == typ && strings.EqualFold(a.name, name) {
			pieces = append(pieces, a)
		}
	}
	if len(pieces) == 0 {
		return nil, fmt.Errorf("MFT record %d has no attribute 0x%x %q: %w", rec.num, typ, name, ErrNotFound)
	}
	first := pieces[0]
	if !first.nonres {
		return &stream{fs: fs, resident: first.value, size: int64(len(first.value)), init: int64(len(first.value))}, nil
	}
	slices.SortFunc(pieces, func(a, b *attr) int { return int(min(max(a.startVCN-b.startVCN, -1), 1)) })
	first = pieces[0]
	s := &stream{fs: fs, size: first.dataSize, init: min(first.initSize, first.dataSize)}
	if first.flags&0x00ff != 0 {
		s.unsup = fmt.Errorf("MFT record %d: a compressed attribute: %w", rec.num, ErrUnsupported)
	} else if first.flags&0x4000 != 0 {
		s.unsup = fmt.Errorf("MFT record %d: an encrypted attribute: %w", rec.num, ErrUnsupported)
	}
	next := int64(0)
	for _, p := range pieces {
		if !p.nonres || p.startVCN != next {
			return nil, corrupt("MFT record %d: attribute 0x%x pieces do not follow each other (VCN %d, want %d)", rec.num, typ, p.startVCN, next)
		}
		for _, r := range p.runs {
			if len(s.runs) >= maxRuns {
				return nil, corrupt("MFT record %d: more than %d data runs", rec.num, maxRuns)
			}
			s.runs = append(s.runs, r)
			next = r.vcn + r.n
		}
		if p.lastVCN >= p.startVCN && next != p.lastVCN+1 {
			return nil, corrupt("MFT record %d: runs end at VCN %d, the header says %d", rec.num, next-1, p.lastVCN)
		}
	}
	if s.size > next*fs.cluster {
		return nil, corrupt("MFT record %d: %d bytes in %d clusters", rec.num, s.size, next)
	}
	if s.runs == nil {
		s.runs = []run{}
	}
	return s, nil
}

// File is a file or directory of the volume.
type File struct {
	fs   *FS
	rec  *record
	data *stream
	// Ref is its MFT record number.
	Ref int64
}

// IsDir reports whether the file is a directory.
func (f *File) IsDir() bool { return f.rec.isDir() }

// Size is the length of the file's unnamed $DATA stream.
func (f *File) Size() int64 {
	if err := f.load(); err != nil {
		return 0
	}
	return f.data.size
}

func (f *File) load() error {
	if f.data != nil {
		return nil
	}
	if f.IsDir() {
		return fmt.Errorf("MFT record %d is a directory", f.Ref)
	}
	s, err := f.fs.dataOf(f.rec, attrData, "")
	if err != nil {
		return err
	}
	f.data = s
	return nil
}

// ReadAt reads the file's unnamed $DATA stream.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.load(); err != nil {
		return 0, err
	}
	return f.data.ReadAt(p, off)
}

func (fs *FS) file(ref int64) (*File, error) {
	rec, err := fs.record(ref)
	if err != nil {
		return nil, err
	}
	if rec.base != 0 {
		return nil, corrupt("MFT record %d is an extension of record %d, not a file", ref, rec.base)
	}
	return &File{fs: fs, rec: rec, Ref: ref}, nil
}

// Open finds a file by its path from the root ("/Windows/System32/cmd.exe";
// "/" or "\" separate), case-insensitively.
func (fs *FS) Open(path string) (*File, error) {
	parts := strings.FieldsFunc(path, func(r rune) bool { return r == '/' || r == '\\' })
	if len(parts) > maxPath {
		return nil, fmt.Errorf("%s: more than %d components", path, maxPath)
	}
	f, err := fs.file(recRoot)
	if err != nil {
		return nil, fmt.Errorf("the root directory: %w", err)
	}
	for _, name := range parts {
		if !f.IsDir() {
			return nil, fmt.Errorf("%s: %w (a component is not a directory)", path, ErrNotFound)
		}
		ref, err := fs.lookup(f, name)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if f, err = fs.file(ref); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return f, nil
}

// index is a directory's $I30 B+tree.
type index struct {
	fs        *FS
	dir       int64
	root      []byte // the $INDEX_ROOT value
	alloc     *stream
	blockSize int64
	vcnShift  uint
}

func (fs *FS) index(dir *File) (*index, error) {
	all, err := fs.attrs(dir.rec)
	if err != nil {
		return nil, err
	}
	ix := &index{fs: fs, dir: dir.Ref}
	for i := range all {
		if a := &all[i]; a.typ == attrIndexRoot && a.name == "$I30" && !a.nonres {
			ix.root = a.value
		}
	}
	if len(ix.root) < 0x20 {
		return nil, corrupt("directory %d has no $I30 index root", dir.Ref)
	}
	ix.blockSize = int64(binary.LittleEndian.Uint32(ix.root[8:]))
	if ix.blockSize < 512 || ix.blockSize > 64<<10 || ix.blockSize&(ix.blockSize-1) != 0 {
		return nil, corrupt("directory %d: index blocks of %d bytes", dir.Ref, ix.blockSize)
	}
	if fs.cluster <= ix.blockSize {
		ix.vcnShift = uint(bits.TrailingZeros64(uint64(fs.cluster)))
	} else {
		ix.vcnShift = 9
	}
	if ix.root[0x1c]&1 != 0 { // a large index: blocks in $INDEX_ALLOCATION
		if ix.alloc, err = fs.dataOf(dir.rec, attrIndexAlloc, "$I30"); err != nil {
			return nil, fmt.Errorf("directory %d: %w", dir.Ref, err)
		}
	}
	return ix, nil
}

// entry is one index entry of a directory.
type entry struct {
	ref       int64
	name      string
	namespace byte
	child     int64 // VCN of the subnode, -1 for none
	last      bool
}

// node parses the entries of an index node whose header is at hdr.
func parseNode(b []byte, hdr int, what string) ([]entry, error) {
	le := binary.LittleEndian
	if hdr+16 > len(b) {
		return nil, corrupt("%s: no node header", what)
	}
	start, end := hdr+int(le.Uint32(b[hdr:])), hdr+int(le.Uint32(b[hdr+4:]))
	if start < hdr+16 || end > len(b) || start > end {
		return nil, corrupt("%s: entries at %d..%d outside %d bytes", what, start, end, len(b))
	}
	var out []entry
	for off := start; ; {
		if off+16 > end {
			return nil, corrupt("%s: entries end without a last entry", what)
		}
		elen, klen, flags := int(le.Uint16(b[off+8:])), int(le.Uint16(b[off+10:])), le.Uint16(b[off+12:])
		if elen < 16 || off+elen > end || 16+klen > elen {
			return nil, corrupt("%s: an entry of %d bytes at %d", what, elen, off)
		}
		e := entry{ref: int64(le.Uint64(b[off:]) & (1<<48 - 1)), child: -1, last: flags&2 != 0}
		if flags&1 != 0 {
			if elen < 24 {
				return nil, corrupt("%s: an entry with a subnode of %d bytes", what, elen)
			}
			e.child = int64(le.Uint64(b[off+elen-8:]))
		}
		if !e.last {
			k := b[off+16 : off+16+klen]
			if len(k) < 0x42 || 0x42+2*int(k[0x40]) > len(k) {
				return nil, corrupt("%s: a file name key of %d bytes at %d", what, klen, off)
			}
			e.namespace = k[0x41]
			e.name = utf16String(k[0x42 : 0x42+2*int(k[0x40])])
		}
		out = append(out, e)
		if e.last || len(out) > 4096 {
			return out, nil
		}
		off += elen
	}
}

// block reads the index block at vcn.
func (ix *index) block(vcn int64) ([]entry, error) {
	ix.fs.blocks++
	if ix.fs.blocks > MaxIndexBlocks {
		return nil, corrupt("more than %d index blocks read", MaxIndexBlocks)
	}
	if ix.fs.meta += ix.blockSize; ix.fs.meta > MaxMetadata {
		return nil, corrupt("more than %d bytes of MFT records and index blocks read", MaxMetadata)
	}
	what := fmt.Sprintf("directory %d, index block at VCN %d", ix.dir, vcn)
	if ix.alloc == nil || vcn < 0 || vcn > (ix.alloc.size>>ix.vcnShift) {
		return nil, corrupt("%s: outside the index allocation", what)
	}
	b := make([]byte, ix.blockSize)
	if n, err := ix.alloc.ReadAt(b, vcn<<ix.vcnShift); n < len(b) {
		return nil, fmt.Errorf("%s: %w", what, orEOF(err))
	}
	if string(b[:4]) != "INDX" {
		return nil, corrupt("%s: no INDX signature", what)
	}
	if err := fixup(b, what); err != nil {
		return nil, err
	}
	return parseNode(b, 0x18, what)
}

// upcase folds a UTF-16 code unit as Windows' $UpCase table does for the
// names the check looks up.
func upcase(u uint16) uint16 {
	if u >= 'a' && u <= 'z' {
		return u - 32
	}
	if u < 0x80 || (u >= 0xd800 && u < 0xe000) {
		return u
	}
	if r := unicode.ToUpper(rune(u)); r <= 0xffff {
		return uint16(r)
	}
	return u
}

// collate compares two names as NTFS orders a directory: by their
// upcased UTF-16 code units.
func collate(a, b []uint16) int {
	for i := range min(len(a), len(b)) {
		x, y := upcase(a[i]), upcase(b[i])
		if x != y {
			return int(x) - int(y)
		}
	}
	return len(a) - len(b)
}

// lookup finds name in directory dir by descending its B+tree.
func (fs *FS) lookup(dir *File, name string) (int64, error) {
	ix, err := fs.index(dir)
	if err != nil {
		return 0, err
	}
	want := utf16.Encode([]rune(name))
	entries, err := parseNode(ix.root, 0x10, fmt.Sprintf("directory %d, index root", dir.Ref))
	if err != nil {
		return 0, err
	}
	for depth := 0; depth < maxDepth; depth++ {
		next := int64(-1)
		for _, e := range entries {
			c := -1 // the last entry stands for every name after the others
			if !e.last {
				c = collate(want, utf16.Encode([]rune(e.name)))
			}
			if c == 0 {
				return e.ref, nil
			}
			if c < 0 {
				next = e.child
				break
			}
		}
		if next < 0 {
			return 0, ErrNotFound
		}
		if entries, err = ix.block(next); err != nil {
			return 0, err
		}
	}
	return 0, corrupt("directory %d: an index deeper than %d levels", dir.Ref, maxDepth)
}

// ReadDir lists the names in a directory (long names; no DOS 8.3
// aliases), in the directory's order, at most maxDirEntries.
func (fs *FS) ReadDir(path string) ([]string, error) {
	dir, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	if !dir.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", path)
	}
	ix, err := fs.index(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	root, err := parseNode(ix.root, 0x10, fmt.Sprintf("directory %d, index root", dir.Ref))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var names []string
	var walk func(es []entry, depth int) error
	walk = func(es []entry, depth int) error {
		if depth > maxDepth {
			return corrupt("directory %d: an index deeper than %d levels", dir.Ref, maxDepth)
		}
		for _, e := range es {
			if e.child >= 0 {
				sub, err := ix.block(e.child)
				if err != nil {
					return err
				}
				if err := walk(sub, depth+1); err != nil {
					return err
				}
			}
			if !e.last && e.namespace != 2 {
				if len(names) >= maxDirEntries {
					return corrupt("directory %d: more than %d entries", dir.Ref, maxDirEntries)
				}
				names = append(names, e.name)
			}
		}
		return nil
	}
	if err := walk(root, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return names, nil
}

// Volume is what $Volume says.
type Volume struct {
	Major, Minor byte
	// Dirty: the volume was not cleanly unmounted (or chkdsk is due).
	Dirty bool
	Flags uint16
}

// Volume reads the $VOLUME_INFORMATION of $Volume (record 3).
func (fs *FS) Volume() (Volume, error) {
	rec, err := fs.record(recVolume)
	if err != nil {
		return Volume{}, fmt.Errorf("$Volume: %w", err)
	}
	for _, a := range rec.attrs {
		if a.typ == attrVolInfo && !a.nonres && len(a.value) >= 12 {
			f := binary.LittleEndian.Uint16(a.value[10:])
			return Volume{Major: a.value[8], Minor: a.value[9], Flags: f, Dirty: f&1 != 0}, nil
		}
	}
	return Volume{}, corrupt("$Volume (record 3) has no volume information")
}

// Usage counts the clusters in use in $Bitmap (record 6): the used and
// total bytes of the volume.
func (fs *FS) Usage() (used, total int64, err error) {
	f, err := fs.file(recBitmap)
	if err != nil {
		return 0, 0, fmt.Errorf("$Bitmap: %w", err)
	}
	need := (fs.clusters + 7) / 8
	if f.Size() < need {
		return 0, 0, corrupt("$Bitmap: %d bytes for %d clusters", f.Size(), fs.clusters)
	}
	buf := make([]byte, 64<<10)
	var n int64
	for off := int64(0); off < need; off += int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), need-off)]
		if m, err := f.ReadAt(chunk, off); m < len(chunk) {
			return 0, 0, fmt.Errorf("$Bitmap at %d: %w", off, orEOF(err))
		}
		if rest := fs.clusters - off*8; rest < int64(len(chunk))*8 && rest%8 != 0 {
			// The last byte's bits past the volume do not count.
			chunk[len(chunk)-1] &= byte(1<<(rest%8) - 1)
		}
		for len(chunk) >= 8 {
			n += int64(bits.OnesCount64(binary.LittleEndian.Uint64(chunk)))
			chunk = chunk[8:]
		}
		for _, c := range chunk {
			n += int64(bits.OnesCount8(c))
		}
	}
	return n * fs.cluster, fs.clusters * fs.cluster, nil
}
