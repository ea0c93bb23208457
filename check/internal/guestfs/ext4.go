package guestfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A small read-only ext2/3/4 reader: superblock, group descriptors, inodes,
// extent trees and the old block maps, linear directories (htree
// directories read as linear ones: their index blocks look like empty
// entries), fast and slow symlinks. Every field is checked before use.

var errExtCorrupt = errors.New("ext4: corrupt file system")

// extSuper is the part of the ext superblock the checks use.
type extSuper struct {
	inodes, freeInodes   uint32
	blocks, freeBlocks   uint64
	firstDataBlock       uint32
	logBlockSize         uint32
	blocksPerGroup       uint32
	inodesPerGroup       uint32
	inodeSize            uint32
	descSize             uint32
	compat, incompat, ro uint32
	state                uint16 // 1: cleanly unmounted, 2: errors found
	uuid, label          string
}

const (
	extCompatJournal   = 0x4
	extIncompatRecover = 0x4
	extIncompatExtents = 0x40
	extIncompat64      = 0x80
	extIncompatFlexBG  = 0x200
	extIncompatInline  = 0x8000
	extInodeExtents    = 0x80000
	extInodeInline     = 0x10000000
)

// parseExtSuper reads the 1024-byte superblock.
func parseExtSuper(b []byte) (*extSuper, error) {
	if len(b) < 1024 || binary.LittleEndian.Uint16(b[0x38:]) != 0xef53 {
		return nil, fmt.Errorf("%w: no ext superblock", errExtCorrupt)
	}
	le16 := func(o int) uint32 { return uint32(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(o int) uint32 { return binary.LittleEndian.Uint32(b[o:]) }
	s := &extSuper{
		inodes: le32(0), blocks: uint64(le32(4)), freeBlocks: uint64(le32(0xc)), freeInodes: le32(0x10),
		firstDataBlock: le32(0x14), logBlockSize: le32(0x18), blocksPerGroup: le32(0x20), inodesPerGroup: le32(0x28),
		compat: le32(0x5c), incompat: le32(0x60), ro: le32(0x64), state: uint16(le16(0x3a)),
		uuid: uuidString(b[0x68:0x78]), label: cstring(b[0x78:0x88]), inodeSize: 128, descSize: 32,
	}
	if le32(0x4c) >= 1 { // dynamic revision
		s.inodeSize = le16(0x58)
	}
	if s.incompat&extIncompat64 != 0 {
		s.blocks |= uint64(le32(0x150)) << 32
		s.freeBlocks |= uint64(le32(0x158)) << 32
		s.descSize = le16(0xfe)
	}
	switch {
	case s.logBlockSize > 6:
		return nil, fmt.Errorf("%w: block size 2^(10+%d)", errExtCorrupt, s.logBlockSize)
	case s.inodeSize < 128 || s.inodeSize > 1<<s.blockBits() || s.inodeSize&(s.inodeSize-1) != 0:
		return nil, fmt.Errorf("%w: inode size %d", errExtCorrupt, s.inodeSize)
	case s.descSize < 32 || s.descSize > 1024 || s.descSize&(s.descSize-1) != 0:
		return nil, fmt.Errorf("%w: group descriptor size %d", errExtCorrupt, s.descSize)
	case s.blocksPerGroup == 0 || s.inodesPerGroup == 0 || s.blocks == 0 || s.inodes == 0:
		return nil, fmt.Errorf("%w: empty geometry", errExtCorrupt)
	case s.blocks > 1<<48:
		return nil, fmt.Errorf("%w: %d blocks", errExtCorrupt, s.blocks)
	}
	return s, nil
}

func (s *extSuper) blockBits() uint32 { return 10 + s.logBlockSize }

func (s *extSuper) groups() uint64 {
	return (s.blocks - uint64(s.firstDataBlock) + uint64(s.blocksPerGroup) - 1) / uint64(s.blocksPerGroup)
}

// kind names the file system as blkid does: ext4 when it uses a feature
// ext3 lacks, ext3 with a journal, else ext2.
func (s *extSuper) kind() string {
	switch {
	case s.incompat&^0x17 != 0 || s.ro&^0x7 != 0: // beyond filetype, recover, journal dev, compression; sparse_super, large_file, btree_dir
		return "ext4"
	case s.compat&extCompatJournal != 0:
		return "ext3"
	}
	return "ext2"
}

func (s *extSuper) info() Info {
	f := Info{Type: s.kind(), UUID: s.uuid, Label: s.label, Used: -1, Inodes: -1, Magic: 1024 + 0x38}
	switch {
	case s.state&2 != 0:
		f.Dirty = "the kernel recorded errors in it"
	case s.incompat&extIncompatRecover != 0:
		f.Dirty = "its journal needs recovery"
	}
	if s.freeBlocks <= s.blocks {
		f.Used = 100 * float64(s.blocks-s.freeBlocks) / float64(s.blocks)
	}
	if s.freeInodes <= s.inodes {
		f.Inodes = 100 * float64(s.inodes-s.freeInodes) / float64(s.inodes)
	}
	return f
}

// extFS reads files of one ext file system.
type extFS struct {
	r    io.ReaderAt
	size int64 // bytes of the partition
	sb   *extSuper
	bs   int64
	gdt  int64 // offset of the group descriptor table
	// nodes caches extent Tree blocks (the reader is used by one
	// goroutine at a time).
	nodes [4]cachedNode
}

type cachedNode struct {
	blk  uint64
	data []byte
}

func OpenExt4(r io.ReaderAt, size int64) (*extFS, error) {
	b := make([]byte, 1024)
	if err := ReadFull(r, b, 1024, size); err != nil {
		return nil, err
	}
	sb, err := parseExtSuper(b)
	if err != nil {
		return nil, err
	}
	f := &extFS{r: r, size: size, sb: sb, bs: 1 << sb.blockBits()}
	f.gdt = (int64(sb.firstDataBlock) + 1) * f.bs
	if sb.groups()*uint64(sb.descSize) > uint64(size) {
		return nil, fmt.Errorf("%w: %d groups do not fit the partition", errExtCorrupt, sb.groups())
	}
	return f, nil
}

func (f *extFS) RootIno() uint64 { return 2 }

func (f *extFS) read(p []byte, off int64) error {
	if err := ReadFull(f.r, p, off, f.size); err != nil {
		return fmt.Errorf("%w: %v", errExtCorrupt, err)
	}
	return nil
}

func (f *extFS) Inode(ino uint64) (*Inode, error) {
	if ino == 0 || ino > uint64(f.sb.inodes) {
		return nil, fmt.Errorf("%w: inode number %d out of range", errExtCorrupt, ino)
	}
	group := (ino - 1) / uint64(f.sb.inodesPerGroup)
	index := (ino - 1) % uint64(f.sb.inodesPerGroup)
	if group >= f.sb.groups() {
		return nil, fmt.Errorf("%w: inode %d in group %d of %d", errExtCorrupt, ino, group, f.sb.groups())
	}
	d := make([]byte, f.sb.descSize)
	if err := f.read(d, f.gdt+int64(group)*int64(f.sb.descSize)); err != nil {
		return nil, err
	}
	table := uint64(binary.LittleEndian.Uint32(d[8:]))
	if f.sb.descSize >= 64 && f.sb.incompat&extIncompat64 != 0 {
		table |= uint64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	if table >= f.sb.blocks {
		return nil, fmt.Errorf("%w: inode table of group %d at block %d", errExtCorrupt, group, table)
	}
	raw := make([]byte, min(f.sb.inodeSize, 256))
	if err := f.read(raw, int64(table)*f.bs+int64(index)*int64(f.sb.inodeSize)); err != nil {
		return nil, err
	}
	size := uint64(binary.LittleEndian.Uint32(raw[4:])) | uint64(binary.LittleEndian.Uint32(raw[0x6c:]))<<32
	if size > 1<<50 {
		return nil, fmt.Errorf("%w: inode %d has the size %d", errExtCorrupt, ino, size)
	}
	return &Inode{Ino: ino, mode: binary.LittleEndian.Uint16(raw[0:]), size: int64(size), raw: raw}, nil
}

func extFlags(in *Inode) uint32 { return binary.LittleEndian.Uint32(in.raw[0x20:]) }

// inline reports whether the inode's data sits in i_block itself: fast
// symlinks and inline data.
func (f *extFS) inline(in *Inode) bool {
	fl := extFlags(in)
	if fl&extInodeInline != 0 {
		return true
	}
	return in.IsSymlink() && in.size < 60 && fl&extInodeExtents == 0
}

// mapBlock maps a logical block of the inode to a physical block; 0 means
// a hole (reads as zeros).
func (f *extFS) mapBlock(in *Inode, lblk uint64) (uint64, error) {
	iblock := in.raw[0x28 : 0x28+60]
	var pblk uint64
	var err error
	if extFlags(in)&extInodeExtents != 0 {
		pblk, err = f.mapExtent(iblock, lblk)
	} else {
		pblk, err = f.mapIndirect(iblock, lblk)
	}
	if err == nil && pblk >= f.sb.blocks {
		err = fmt.Errorf("%w: inode %d maps block %d to %d, past the end", errExtCorrupt, in.Ino, lblk, pblk)
	}
	return pblk, err
}

func (f *extFS) mapExtent(node []byte, lblk uint64) (uint64, error) {
	depth := -1
	for level := 0; ; level++ {
		if len(node) < 12 || binary.LittleEndian.Uint16(node) != 0xf30a {
			return 0, fmt.Errorf("%w: bad extent header", errExtCorrupt)
		}
		entries := int(binary.LittleEndian.Uint16(node[2:]))
		d := int(binary.LittleEndian.Uint16(node[6:]))
		if entries > (len(node)-12)/12 || d > 5 || (depth >= 0 && d != depth-1) {
			return 0, fmt.Errorf("%w: extent node with %d entries at depth %d", errExtCorrupt, entries, d)
		}
		depth = d
		if d == 0 {
			for i := range entries {
				e := node[12+12*i:]
				start := uint64(binary.LittleEndian.Uint32(e))
				n := uint64(binary.LittleEndian.Uint16(e[4:]))
				uninit := n > 32768
				if uninit {
					n -= 32768
				}
				if lblk >= start && lblk < start+n {
					if uninit {
						return 0, nil
					}
					phys := uint64(binary.LittleEndian.Uint16(e[6:]))<<32 | uint64(binary.LittleEndian.Uint32(e[8:]))
					return phys + (lblk - start), nil
				}
			}
			return 0, nil
		}
		child := -1
		for i := range entries {
			if uint64(binary.LittleEndian.Uint32(node[12+12*i:])) <= lblk {
				child = i
			}
		}
		if child < 0 {
			return 0, nil
		}
		e := node[12+12*child:]
		leaf := uint64(binary.LittleEndian.Uint32(e[4:])) | uint64(binary.LittleEndian.Uint16(e[8:]))<<32
		if leaf == 0 || leaf >= f.sb.blocks {
			return 0, fmt.Errorf("%w: extent index points to block %d", errExtCorrupt, leaf)
		}
		var err error
		if node, err = f.node(leaf); err != nil {
			return 0, err
		}
	}
}

// node reads an extent Tree block, keeping the last few: reading a file
// maps block after block through the same nodes.
func (f *extFS) node(blk uint64) ([]byte, error) {
	for _, c := range f.nodes {
		if c.blk == blk && c.data != nil {
			return c.data, nil
		}
	}
	b := make([]byte, f.bs)
	if err := f.read(b, int64(blk)*f.bs); err != nil {
		return nil, err
	}
	copy(f.nodes[1:], f.nodes[:len(f.nodes)-1])
	f.nodes[0] = cachedNode{blk, b}
	return b, nil
}

func (f *extFS) mapIndirect(iblock []byte, lblk uint64) (uint64, error) {
	per := uint64(f.bs / 4)
	if lblk < 12 {
		return uint64(binary.LittleEndian.Uint32(iblock[4*lblk:])), nil
	}
	lblk -= 12
	var slot, levels uint64
	switch {
	case lblk < per:
		slot, levels = 12, 1
	case lblk < per+per*per:
		lblk -= per
		slot, levels = 13, 2
	default:
		lblk -= per + per*per
		if lblk >= per*per*per {
			return 0, fmt.Errorf("%w: block %d beyond the triple indirect map", errExtCorrupt, lblk)
		}
		slot, levels = 14, 3
	}
	blk := uint64(binary.LittleEndian.Uint32(iblock[4*slot:]))
	b := make([]byte, 4)
	for l := levels; l > 0; l-- {
		if blk == 0 {
			return 0, nil
		}
		if blk >= f.sb.blocks {
			return 0, fmt.Errorf("%w: indirect block %d past the end", errExtCorrupt, blk)
		}
		span := uint64(1)
		for range l - 1 {
			span *= per
		}
		idx := lblk / span
		lblk %= span
		if err := f.read(b, int64(blk)*f.bs+int64(idx)*4); err != nil {
			return 0, err
		}
		blk = uint64(binary.LittleEndian.Uint32(b))
	}
	return blk, nil
}

func (f *extFS) ReadAt(in *Inode, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset")
	}
	if off >= in.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), in.size-off)
	if f.inline(in) {
		iblock := in.raw[0x28 : 0x28+60]
		if off+want > 60 {
			return 0, fmt.Errorf("%w: inline data of inode %d longer than i_block (%d bytes)", ErrUnsupported, in.Ino, in.size)
		}
		n := copy(p, iblock[off:off+want])
		if int64(n) < int64(len(p)) {
			return n, io.EOF
		}
		return n, nil
	}
	done := int64(0)
	for done < want {
		pos := off + done
		lblk := uint64(pos / f.bs)
		in0 := pos % f.bs
		chunk := min(f.bs-in0, want-done)
		pblk, err := f.mapBlock(in, lblk)
		if err != nil {
			return int(done), err
		}
		// Extend the read over the blocks that follow on disk too.
		for pblk != 0 && done+chunk < want {
			next, err := f.mapBlock(in, lblk+uint64((in0+chunk)/f.bs))
			if err != nil || next != pblk+uint64((in0+chunk)/f.bs) || chunk >= 1<<20 {
				break
			}
			chunk = min(chunk+f.bs, want-done)
		}
		dst := p[done : done+chunk]
		if pblk == 0 {
			clear(dst)
		} else if err := f.read(dst, int64(pblk)*f.bs+in0); err != nil {
			return int(done), err
		}
		done += chunk
	}
	if done < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

func (f *extFS) ReadDir(in *Inode) ([]DirEntry, error) {
	if !in.IsDir() {
		return nil, fmt.Errorf("inode %d is not a directory", in.Ino)
	}
	if in.size > maxDirBytes {
		return nil, fmt.Errorf("%w: directory inode %d of %d bytes", ErrUnsupported, in.Ino, in.size)
	}
	if f.inline(in) {
		return nil, fmt.Errorf("%w: inline-data directory (inode %d)", ErrUnsupported, in.Ino)
	}
	var out []DirEntry
	blk := make([]byte, f.bs)
	for off := int64(0); off < in.size; off += f.bs {
		n, err := f.ReadAt(in, blk, off)
		if err != nil && err != io.EOF {
			return nil, err
		}
		b := blk[:n]
		for p := 0; p+8 <= len(b); {
			ino := binary.LittleEndian.Uint32(b[p:])
			rec := int(binary.LittleEndian.Uint16(b[p+4:]))
			nameLen := int(b[p+6])
			if rec < 8 || rec%4 != 0 || p+rec > len(b) {
				return nil, fmt.Errorf("%w: directory inode %d: entry at %d has length %d", errExtCorrupt, in.Ino, off+int64(p), rec)
			}
			if ino != 0 && nameLen > 0 && 8+nameLen <= rec {
				out = append(out, DirEntry{Name: string(b[p+8 : p+8+nameLen]), Ino: uint64(ino)})
				if len(out) > maxDirEntries {
					return nil, fmt.Errorf("%w: directory inode %d has over %d entries", ErrUnsupported, in.Ino, maxDirEntries)
				}
			}
			p += rec
		}
	}
	return out, nil
}
