package guestfs

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// A small read-only xfs reader for path lookup of small files: superblock,
// inodes (v2 and v3), data forks in local, extent-list and B+Tree format,
// short-form, block, leaf and node directories (their data blocks read
// linearly), local and remote symlinks. Every field is checked before use.

var errXFSCorrupt = errors.New("xfs: corrupt file system")

type xfsSuper struct {
	blockSize  uint32
	dblocks    uint64
	uuid       string
	rootIno    uint64
	agBlocks   uint32
	agCount    uint32
	version    uint16
	inodeSize  uint16
	label      string
	blockLog   uint8
	inopbLog   uint8
	agBlkLog   uint8
	dirBlkLog  uint8
	icount     uint64
	ifree      uint64
	fdblocks   uint64
	features2  uint32
	incompat   uint32
	hasFtype   bool
	v5         bool
	bigExtents bool
}

func parseXFSSuper(b []byte) (*xfsSuper, error) {
	if len(b) < 232 || string(b[0:4]) != "XFSB" {
		return nil, fmt.Errorf("%w: no superblock", errXFSCorrupt)
	}
	be16 := func(o int) uint16 { return binary.BigEndian.Uint16(b[o:]) }
	be32 := func(o int) uint32 { return binary.BigEndian.Uint32(b[o:]) }
	be64 := func(o int) uint64 { return binary.BigEndian.Uint64(b[o:]) }
	s := &xfsSuper{
		blockSize: be32(4), dblocks: be64(8), uuid: uuidString(b[32:48]), rootIno: be64(56),
		agBlocks: be32(84), agCount: be32(88), version: be16(100), inodeSize: be16(104),
		label: cstring(b[108:120]), blockLog: b[120], inopbLog: b[123], agBlkLog: b[124],
		icount: be64(128), ifree: be64(136), fdblocks: be64(144), dirBlkLog: b[192], features2: be32(200),
	}
	s.v5 = s.version&0xf == 5
	if s.v5 {
		s.incompat = be32(216)
		s.hasFtype = s.incompat&0x1 != 0
		s.bigExtents = s.incompat&0x20 != 0
	} else {
		s.hasFtype = s.features2&0x200 != 0
	}
	switch {
	case s.blockLog < 9 || s.blockLog > 16 || s.blockSize != 1<<s.blockLog:
		return nil, fmt.Errorf("%w: block size %d", errXFSCorrupt, s.blockSize)
	case s.inodeSize < 256 && s.v5, s.inodeSize < 128, s.inodeSize > 2048, s.inodeSize&(s.inodeSize-1) != 0:
		return nil, fmt.Errorf("%w: inode size %d", errXFSCorrupt, s.inodeSize)
	case uint32(s.inodeSize)<<s.inopbLog != s.blockSize:
		return nil, fmt.Errorf("%w: %d inodes per block", errXFSCorrupt, 1<<s.inopbLog)
	case s.agBlkLog > 31 || s.agBlocks == 0 || s.agBlocks > 1<<s.agBlkLog || s.agCount == 0:
		return nil, fmt.Errorf("%w: allocation group geometry", errXFSCorrupt)
	case s.dirBlkLog > 6 || s.blockLog+s.dirBlkLog > 16:
		return nil, fmt.Errorf("%w: directory block size", errXFSCorrupt)
	case s.dblocks == 0 || s.dblocks > 1<<52:
		return nil, fmt.Errorf("%w: %d blocks", errXFSCorrupt, s.dblocks)
	}
	return s, nil
}

type xfsFS struct {
	r    io.ReaderAt
	size int64
	sb   *xfsSuper
	bs   int64
	// last is the extent list of the inode read last, sorted by offset
	// (the reader is used by one goroutine at a time).
	last struct {
		ino  uint64
		exts []xfsExtent
	}
}

// Fork formats.
const (
	xfsLocal   = 1
	xfsExtents = 2
	xfsBtree   = 3
)

const maxXFSExtents = 1 << 16

func OpenXFS(r io.ReaderAt, size int64) (*xfsFS, error) {
	b := make([]byte, 512)
	if err := ReadFull(r, b, 0, size); err != nil {
		return nil, err
	}
	sb, err := parseXFSSuper(b)
	if err != nil {
		return nil, err
	}
	return &xfsFS{r: r, size: size, sb: sb, bs: int64(sb.blockSize)}, nil
}

func (f *xfsFS) RootIno() uint64 { return f.sb.rootIno }

func (f *xfsFS) read(p []byte, off int64) error {
	if err := ReadFull(f.r, p, off, f.size); err != nil {
		return fmt.Errorf("%w: %v", errXFSCorrupt, err)
	}
	return nil
}

// fsbOffset turns a file system block number (AG number and AG block) into
// a byte offset.
func (f *xfsFS) fsbOffset(fsb uint64) (int64, error) {
	ag := fsb >> f.sb.agBlkLog
	agb := fsb & (1<<f.sb.agBlkLog - 1)
	if ag >= uint64(f.sb.agCount) || agb >= uint64(f.sb.agBlocks) {
		return 0, fmt.Errorf("%w: block %d outside the file system", errXFSCorrupt, fsb)
	}
	return int64(ag*uint64(f.sb.agBlocks)+agb) * f.bs, nil
}

func (f *xfsFS) Inode(ino uint64) (*Inode, error) {
	bits := f.sb.agBlkLog + f.sb.inopbLog
	ag := ino >> bits
	agb := (ino >> f.sb.inopbLog) & (1<<f.sb.agBlkLog - 1)
	idx := ino & (1<<f.sb.inopbLog - 1)
	if ag >= uint64(f.sb.agCount) || agb >= uint64(f.sb.agBlocks) {
		return nil, fmt.Errorf("%w: inode number %d out of range", errXFSCorrupt, ino)
	}
	off := int64(ag*uint64(f.sb.agBlocks)+agb)*f.bs + int64(idx)*int64(f.sb.inodeSize)
	raw := make([]byte, f.sb.inodeSize)
	if err := f.read(raw, off); err != nil {
		return nil, err
	}
	if string(raw[0:2]) != "IN" {
		return nil, fmt.Errorf("%w: inode %d has no magic", errXFSCorrupt, ino)
	}
	size := binary.BigEndian.Uint64(raw[56:])
	if size > 1<<50 {
		return nil, fmt.Errorf("%w: inode %d has the size %d", errXFSCorrupt, ino, size)
	}
	if raw[4] < 3 && f.sb.v5 || raw[4] == 0 || raw[4] > 3 {
		return nil, fmt.Errorf("%w: inode %d has version %d", errXFSCorrupt, ino, raw[4])
	}
	return &Inode{Ino: ino, mode: binary.BigEndian.Uint16(raw[2:]), size: int64(size), raw: raw}, nil
}

// fork returns the data fork bytes and its format.
func (f *xfsFS) fork(in *Inode) ([]byte, byte, error) {
	core := 100
	if in.raw[4] == 3 {
		core = 176
	}
	end := len(in.raw)
	if fo := int(in.raw[82]); fo != 0 {
		end = core + fo*8
	}
	if end <= core || end > len(in.raw) {
		return nil, 0, fmt.Errorf("%w: inode %d has the fork offset %d", errXFSCorrupt, in.Ino, in.raw[82])
	}
	return in.raw[core:end], in.raw[5], nil
}

func (f *xfsFS) nextents(in *Inode) uint64 {
	if f.sb.bigExtents && in.raw[4] == 3 {
		return binary.BigEndian.Uint64(in.raw[24:])
	}
	return uint64(binary.BigEndian.Uint32(in.raw[76:]))
}

type xfsExtent struct {
	off, block, count uint64 // logical block, file system block, blocks
	unwritten         bool
}

func parseXFSExtent(b []byte) xfsExtent {
	l0 := binary.BigEndian.Uint64(b)
	l1 := binary.BigEndian.Uint64(b[8:])
	return xfsExtent{
		unwritten: l0>>63 != 0,
		off:       (l0 & (1<<63 - 1)) >> 9,
		block:     (l0&0x1ff)<<43 | l1>>21,
		count:     l1 & (1<<21 - 1),
	}
}

// extents lists the data fork's extents (extent-list or B+Tree format),
// sorted by logical offset.
func (f *xfsFS) extents(in *Inode) ([]xfsExtent, error) {
	if f.last.exts != nil && f.last.ino == in.Ino {
		return f.last.exts, nil
	}
	exts, err := f.readExtents(in)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(exts, func(a, b xfsExtent) int { return cmp.Compare(a.off, b.off) })
	f.last.ino, f.last.exts = in.Ino, exts
	return exts, nil
}

func (f *xfsFS) readExtents(in *Inode) ([]xfsExtent, error) {
	fork, format, err := f.fork(in)
	if err != nil {
		return nil, err
	}
	switch format {
	case xfsExtents:
		n := f.nextents(in)
		if n > uint64(len(fork)/16) {
			return nil, fmt.Errorf("%w: inode %d claims %d extents", errXFSCorrupt, in.Ino, n)
		}
		out := make([]xfsExtent, n)
		for i := range out {
			out[i] = parseXFSExtent(fork[16*i:])
		}
		return out, nil
	case xfsBtree:
		if len(fork) < 4 {
			return nil, fmt.Errorf("%w: short B+Tree root", errXFSCorrupt)
		}
		level := int(binary.BigEndian.Uint16(fork))
		n := int(binary.BigEndian.Uint16(fork[2:]))
		maxr := (len(fork) - 4) / 16
		if level == 0 || level > 8 || n > maxr {
			return nil, fmt.Errorf("%w: B+Tree root level %d with %d records", errXFSCorrupt, level, n)
		}
		var out []xfsExtent
		for i := range n {
			ptr := binary.BigEndian.Uint64(fork[4+maxr*8+8*i:])
			if err := f.btreeBlock(ptr, level-1, &out); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: inode %d data fork format %d", ErrUnsupported, in.Ino, format)
}

func (f *xfsFS) btreeBlock(fsb uint64, level int, out *[]xfsExtent) error {
	off, err := f.fsbOffset(fsb)
	if err != nil {
		return err
	}
	b := make([]byte, f.bs)
	if err := f.read(b, off); err != nil {
		return err
	}
	hdr := 24
	if f.sb.v5 {
		hdr = 72
	}
	magic := string(b[0:4])
	if magic != "BMAP" && magic != "BMA3" {
		return fmt.Errorf("%w: B+Tree block %d has no magic", errXFSCorrupt, fsb)
	}
	lv := int(binary.BigEndian.Uint16(b[4:]))
	n := int(binary.BigEndian.Uint16(b[6:]))
	maxr := (len(b) - hdr) / 16
	if lv != level || n > maxr {
		return fmt.Errorf("%w: B+Tree block %d level %d with %d records", errXFSCorrupt, fsb, lv, n)
	}
	if level == 0 {
		if len(*out)+n > maxXFSExtents {
			return fmt.Errorf("%w: more than %d extents", ErrUnsupported, maxXFSExtents)
		}
		for i := range n {
			*out = append(*out, parseXFSExtent(b[hdr+16*i:]))
		}
		return nil
	}
	for i := range n {
		if err := f.btreeBlock(binary.BigEndian.Uint64(b[hdr+maxr*8+8*i:]), level-1, out); err != nil {
			return err
		}
	}
	return nil
}

// readLogical reads bytes at a logical byte offset of the inode's data fork;
// holes and unwritten extents read as zeros.
func (f *xfsFS) readLogical(exts []xfsExtent, p []byte, off int64) error {
	clear(p)
	for done := int64(0); done < int64(len(p)); {
		pos := off + done
		lblk := uint64(pos / f.bs)
		in0 := pos % f.bs
		chunk := min(f.bs-in0, int64(len(p))-done)
		// The last extent starting at or before lblk.
		i, _ := slices.BinarySearchFunc(exts, lblk+1, func(e xfsExtent, t uint64) int { return cmp.Compare(e.off, t) })
		if i > 0 {
			e := exts[i-1]
			if lblk-e.off < e.count {
				if !e.unwritten {
					o, err := f.fsbOffset(e.block + (lblk - e.off))
					if err != nil {
						return err
					}
					if err := f.read(p[done:done+chunk], o+in0); err != nil {
						return err
					}
				}
			}
		}
		done += chunk
	}
	return nil
}

func (f *xfsFS) ReadAt(in *Inode, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset")
	}
	if off >= in.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), in.size-off)
	fork, format, err := f.fork(in)
	if err != nil {
		return 0, err
	}
	if format == xfsLocal {
		if off+want > int64(len(fork)) {
			return 0, fmt.Errorf("%w: local data of inode %d longer than its fork", errXFSCorrupt, in.Ino)
		}
		copy(p, fork[off:off+want])
	} else {
		exts, err := f.extents(in)
		if err != nil {
			return 0, err
		}
		if in.IsSymlink() && f.sb.v5 {
			// Remote symlinks carry a 56-byte header in each block;
			// targets are at most 1024 bytes, one block.
			blk := make([]byte, f.bs)
			if err := f.readLogical(exts, blk, 0); err != nil {
				return 0, err
			}
			if string(blk[0:4]) != "XSLM" || off+want > f.bs-56 {
				return 0, fmt.Errorf("%w: remote symlink inode %d", errXFSCorrupt, in.Ino)
			}
			copy(p, blk[56+off:56+off+want])
		} else if err := f.readLogical(exts, p[:want], off); err != nil {
			return 0, err
		}
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

func (f *xfsFS) ReadDir(in *Inode) ([]DirEntry, error) {
	if !in.IsDir() {
		return nil, fmt.Errorf("inode %d is not a directory", in.Ino)
	}
	fork, format, err := f.fork(in)
	if err != nil {
		return nil, err
	}
	if format == xfsLocal {
		return f.shortDir(in, fork)
	}
	if in.size > maxDirBytes {
		return nil, fmt.Errorf("%w: directory inode %d of %d bytes", ErrUnsupported, in.Ino, in.size)
	}
	exts, err := f.extents(in)
	if err != nil {
		return nil, err
	}
	dbs := f.bs << f.sb.dirBlkLog
	blk := make([]byte, dbs)
	var out []DirEntry
	for off := int64(0); off < in.size; off += dbs {
		if err := f.readLogical(exts, blk, off); err != nil {
			return nil, err
		}
		if err := f.dataBlock(in, blk, &out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (f *xfsFS) shortDir(in *Inode, b []byte) ([]DirEntry, error) {
	bad := fmt.Errorf("%w: short-form directory inode %d", errXFSCorrupt, in.Ino)
	if in.size < 6 || int64(len(b)) < in.size {
		return nil, bad
	}
	b = b[:in.size]
	count := int(b[0])
	inoLen := 4
	if b[1] != 0 {
		inoLen = 8
	}
	readIno := func(p []byte) uint64 {
		if inoLen == 8 {
			return binary.BigEndian.Uint64(p)
		}
		return uint64(binary.BigEndian.Uint32(p))
	}
	if 2+inoLen > len(b) {
		return nil, bad
	}
	out := []DirEntry{{Name: "..", Ino: readIno(b[2:])}}
	p := 2 + inoLen
	ft := 0
	if f.sb.hasFtype {
		ft = 1
	}
	for range count {
		if p >= len(b) {
			return nil, bad
		}
		n := int(b[p])
		end := p + 3 + n + ft + inoLen
		if n == 0 || end > len(b) {
			return nil, bad
		}
		out = append(out, DirEntry{Name: string(b[p+3 : p+3+n]), Ino: readIno(b[p+3+n+ft:])})
		p = end
	}
	return out, nil
}

func (f *xfsFS) dataBlock(in *Inode, b []byte, out *[]DirEntry) error {
	hdr := 16
	end := len(b)
	switch string(b[0:4]) {
	case "XD2D":
	case "XDD3":
		hdr = 64
	case "XD2B", "XDB3":
		if string(b[0:4]) == "XDB3" {
			hdr = 64
		}
		count := uint64(binary.BigEndian.Uint32(b[len(b)-8:]))
		if count > uint64(len(b)-hdr-8)/8 {
			return fmt.Errorf("%w: directory inode %d block with %d leaf entries", errXFSCorrupt, in.Ino, count)
		}
		end = len(b) - 8 - int(count)*8
	default:
		return nil // a hole, or a block this reader does not know: no entries
	}
	ft := 0
	if f.sb.hasFtype {
		ft = 1
	}
	for p := hdr; p+8 <= end; {
		if binary.BigEndian.Uint16(b[p:]) == 0xffff {
			n := int(binary.BigEndian.Uint16(b[p+2:]))
			if n < 8 || n%8 != 0 || p+n > end {
				return fmt.Errorf("%w: directory inode %d: free entry of %d bytes", errXFSCorrupt, in.Ino, n)
			}
			p += n
			continue
		}
		if p+9 > end {
			break
		}
		n := int(b[p+8])
		size := (8 + 1 + n + ft + 2 + 7) &^ 7
		if n == 0 || p+size > end {
			return fmt.Errorf("%w: directory inode %d: entry of %d bytes", errXFSCorrupt, in.Ino, size)
		}
		*out = append(*out, DirEntry{Name: string(b[p+9 : p+9+n]), Ino: binary.BigEndian.Uint64(b[p:])})
		if len(*out) > maxDirEntries {
			return fmt.Errorf("%w: directory inode %d has over %d entries", ErrUnsupported, in.Ino, maxDirEntries)
		}
		p += size
	}
	return nil
}
