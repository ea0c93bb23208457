package qcow2

import (
	"encoding/binary"
	"fmt"
	"math"

	"vmimport/reader/image"
)

// The table checks. The reader (l2.go) reads a cluster wherever an L1 or
// L2 entry points, and so would give the guest wrong bytes from a corrupt
// image: data over the header or over another table. Before any read,
// checkTables walks every table once and refuses:
//
//   - an L1 entry whose L2 table is not cluster-aligned, passes the end of
//     the file, or lies on the header, the L1 table, the refcount table, a
//     refcount block, the snapshot table, a snapshot's L1 table or another
//     L2 table (qemu refuses unaligned offsets with EIO; the rest are
//     qemu's default metadata overlap checks);
//   - an L2 entry whose data cluster is not cluster-aligned, passes the end
//     of the file, lies on any of those structures, or is a host cluster
//     another guest cluster uses too; a compressed cluster's bytes likewise
//     (compressed clusters may share host clusters with one another);
//   - extended L2 entries with allocated subclusters but no host cluster,
//     or subclusters both allocated and zero (qemu: "invalid");
//   - refcount table entries not aligned or past the end of the file.
//
// Memory: three bitmaps of one bit per cluster of the file (2 MiB per TiB
// of file at 64 KiB clusters), the L1 table, the refcount table and one L2
// table at a time. Files of more than maxCheckedClusters clusters (128 GiB
// with 512-byte clusters, 16 TiB with 64 KiB) get every check but the
// overlap ones.

const (
	l1OffsetMask    = 0x00fffffffffffe00
	l2OffsetMask    = 0x00fffffffffffe00
	rtOffsetMask    = 0xfffffffffffffe00
	oflagCompressed = 1 << 62
	oflagZero       = 1

	// qemu's limits: QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_SNAPSHOTS,
	// QCOW_MAX_SNAPSHOTS_SIZE, QCOW_MAX_L1_SIZE.
	maxRefcountTable = 8 << 20
	maxSnapshots     = 65536
	maxSnapshotTable = 64 << 20
	maxL1Bytes       = 32 << 20

	maxCheckedClusters = 1 << 28
)

type bitset []uint64

func newBitset(n int64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) has(i int64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i int64)      { b[i/64] |= 1 << (i % 64) }

// tables holds what the walk learned, for the checks and their messages.
type tables struct {
	src     image.Source
	h       *header
	cluster int64
	l1      []uint64 // the active L1 entries that map the disk
	rt      []uint64 // refcount table entries
	snapL1  [][2]int64
	snapTab [2]int64
	meta    bitset // clusters holding the image's own structures
	data    bitset // host clusters of standard data clusters
	comp    bitset // host clusters holding compressed data
}

func (t *tables) bad(off int64, rule string, args ...any) error {
	return image.Corruptf(t.src.Path, "qcow2", off, rule, args...)
}

// checkTables walks the tables of the image in src; see above. It returns
// the L1 entries that map the disk.
func checkTables(src image.Source, h *header) ([]uint64, error) {
	cluster := int64(1) << h.ClusterBits
	t := &tables{src: src, h: h, cluster: cluster}
	if n := (src.Size + cluster - 1) / cluster; n <= maxCheckedClusters {
		t.meta, t.data, t.comp = newBitset(n), newBitset(n), newBitset(n)
	}
	t.markMeta(0, cluster)
	for _, step := range []func() error{t.readL1, t.readRefcountTable, t.readSnapshots, t.placeL2Tables, t.checkData} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return t.l1, nil
}

// markMeta marks the clusters of [off, off+n) as metadata.
func (t *tables) markMeta(off, n int64) {
	if t.meta == nil || n <= 0 {
		return
	}
	for c := off / t.cluster; c <= (off+n-1)/t.cluster; c++ {
		t.meta.set(c)
	}
}

// metaIn returns the first metadata cluster in [off, off+n), or -1.
func (t *tables) metaIn(off, n int64) int64 {
	if t.meta == nil {
		return -1
	}
	for c := off / t.cluster; c <= (off+n-1)/t.cluster; c++ {
		if t.meta.has(c) {
			return c
		}
	}
	return -1
}

// what names the structure in cluster c, for errors.
func (t *tables) what(c int64) string {
	off := c * t.cluster
	in := func(start, n int64) bool { return off+t.cluster > start && off < start+n }
	h := t.h
	switch {
	case c == 0:
		return "the header cluster"
	case in(int64(h.L1TableOffset), int64(h.L1Size)*8):
		return fmt.Sprintf("the L1 table at offset %d", h.L1TableOffset)
	case in(int64(h.RefcountTableOffset), int64(h.RefcountTableClus)*t.cluster):
		return fmt.Sprintf("the refcount table at offset %d", h.RefcountTableOffset)
	case t.snapTab[1] > 0 && in(t.snapTab[0], t.snapTab[1]):
		return fmt.Sprintf("the snapshot table at offset %d", t.snapTab[0])
	}
	for i, e := range t.rt {
		if o := int64(e & rtOffsetMask); o != 0 && in(o, t.cluster) {
			return fmt.Sprintf("refcount block %d at offset %d", i, o)
		}
	}
	for i, s := range t.snapL1 {
		if in(s[0], s[1]) {
			return fmt.Sprintf("the L1 table of snapshot %d at offset %d", i, s[0])
		}
	}
	for i, e := range t.l1 {
		if o := int64(e & l1OffsetMask); o != 0 && in(o, t.cluster) {
			return fmt.Sprintf("the L2 table of L1 entry %d at offset %d", i, o)
		}
	}
	return fmt.Sprintf("metadata at offset %d", off)
}

// readL1 reads the L1 entries that map the virtual size.
func (t *tables) readL1() error {
	h := t.h
	l2Entries := t.cluster / t.entryBytes()
	need := (int64(h.Size) + t.cluster*l2Entries - 1) / (t.cluster * l2Entries)
	if int64(h.L1Size)*8 > maxL1Bytes {
		return t.bad(36, "l1_size %d: an L1 table of %d bytes is larger than qemu's limit of %d", h.L1Size, int64(h.L1Size)*8, maxL1Bytes)
	}
	t.markMeta(int64(h.L1TableOffset), int64(h.L1Size)*8)
	if need == 0 {
		return nil
	}
	b := make([]byte, need*8)
	if err := image.ReadFull(t.src.R, t.src.Size, b, int64(h.L1TableOffset), t.src.Path, "qcow2", "L1 table"); err != nil {
		return err
	}
	t.l1 = make([]uint64, need)
	for i := range t.l1 {
		t.l1[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	return nil
}

func (t *tables) entryBytes() int64 {
	if t.h.Incompatible&incompatExtendedL2 != 0 {
		return 16
	}
	return 8
}

// readRefcountTable checks the refcount table and marks it and every
// refcount block it names.
func (t *tables) readRefcountTable() error {
	h, size := t.h, t.src.Size
	off, n := int64(h.RefcountTableOffset), int64(h.RefcountTableClus)*t.cluster
	switch {
	case n == 0:
		return t.bad(56, "refcount_table_clusters is 0: every image has a refcount table")
	case n > maxRefcountTable:
		return t.bad(56, "refcount_table_clusters %d: a refcount table of %d bytes is larger than qemu's limit of %d", h.RefcountTableClus, n, maxRefcountTable)
	case off%t.cluster != 0:
		return t.bad(48, "refcount_table_offset %d is not aligned to the %d-byte cluster", off, t.cluster)
	case h.RefcountTableOffset > uint64(size) || !image.CheckRange(off, n, size):
		return t.bad(48, "refcount table (%d clusters at offset %d) lies past the end of the file (%d bytes)", h.RefcountTableClus, off, size)
	}
	if c := t.metaIn(off, n); c >= 0 {
		return t.bad(48, "refcount table at offset %d overlaps %s", off, t.what(c))
	}
	t.markMeta(off, n)
	b := make([]byte, n)
	if err := image.ReadFull(t.src.R, size, b, off, t.src.Path, "qcow2", "refcount table"); err != nil {
		return err
	}
	t.rt = make([]uint64, n/8)
	for i := range t.rt {
		t.rt[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	for i, e := range t.rt {
		o := int64(e & rtOffsetMask)
		at := off + 8*int64(i)
		switch {
		case o == 0:
			continue
		case o%t.cluster != 0:
			return t.bad(at, "refcount table entry %d is 0x%016x: refcount block offset %d is not aligned to the %d-byte cluster", i, e, o, t.cluster)
		case !image.CheckRange(o, t.cluster, size):
			return t.bad(at, "refcount table entry %d is 0x%016x: refcount block at offset %d lies past the end of the file (%d bytes)", i, e, o, size)
		}
		if c := t.metaIn(o, t.cluster); c >= 0 {
			return t.bad(at, "refcount table entry %d is 0x%016x: refcount block at offset %d overlaps %s", i, e, o, t.what(c))
		}
		t.markMeta(o, t.cluster)
	}
	return nil
}

// readSnapshots checks the snapshot table and marks it and each
// snapshot's L1 table (the L2 tables and data of snapshots are shared
// with the active image and are not metadata of their own).
func (t *tables) readSnapshots() error {
	h, size := t.h, t.src.Size
	// qemu checks the count, then the offset's alignment and range, even
	// with no snapshots (qcow2_validate_table on a table of 0 entries).
	switch {
	case h.NbSnapshots > maxSnapshots:
		return t.bad(60, "nb_snapshots %d is more than qemu's limit of %d", h.NbSnapshots, maxSnapshots)
	case h.SnapshotsOffset%uint64(t.cluster) != 0:
		return t.bad(64, "snapshots_offset %d is not aligned to the %d-byte cluster", h.SnapshotsOffset, t.cluster)
	case h.SnapshotsOffset > math.MaxInt64-uint64(h.NbSnapshots)*40:
		return t.bad(64, "snapshots_offset %d with %d snapshots ends past the largest offset qemu takes (2^63-1)", h.SnapshotsOffset, h.NbSnapshots)
	case h.NbSnapshots == 0:
		return nil
	}
	off := int64(h.SnapshotsOffset)
	switch {
	case h.SnapshotsOffset >= uint64(size):
		return t.bad(64, "snapshots_offset %d lies past the end of the file (%d bytes)", off, size)
	}
	pos := off
	hdr := make([]byte, 40)
	for i := range int64(h.NbSnapshots) {
		if err := image.ReadFull(t.src.R, size, hdr, pos, t.src.Path, "qcow2", fmt.Sprintf("snapshot %d", i)); err != nil {
			return err
		}
		be := binary.BigEndian
		l1off, l1n := int64(be.Uint64(hdr)), int64(be.Uint32(hdr[8:]))*8
		switch {
		case l1off%t.cluster != 0:
			return t.bad(pos, "snapshot %d: L1 table offset %d is not aligned to the %d-byte cluster", i, l1off, t.cluster)
		case l1n > maxL1Bytes:
			return t.bad(pos+8, "snapshot %d: an L1 table of %d bytes is larger than qemu's limit of %d", i, l1n, maxL1Bytes)
		case l1n > 0 && (l1off <= 0 || !image.CheckRange(l1off, l1n, size)):
			return t.bad(pos, "snapshot %d: L1 table (%d bytes at offset %d) lies past the end of the file (%d bytes)", i, l1n, l1off, size)
		}
		if l1n > 0 {
			t.snapL1 = append(t.snapL1, [2]int64{l1off, l1n})
		}
		n := 40 + int64(be.Uint32(hdr[36:])) + int64(be.Uint16(hdr[12:])) + int64(be.Uint16(hdr[14:]))
		pos += (n + 7) / 8 * 8
		if pos-off > maxSnapshotTable {
			return t.bad(off, "snapshot table of %d snapshots is larger than qemu's limit of %d bytes", h.NbSnapshots, maxSnapshotTable)
		}
	}
	if pos > size {
		return t.bad(64, "snapshot table (%d bytes at offset %d) lies past the end of the file (%d bytes)", pos-off, off, size)
	}
	t.snapTab = [2]int64{off, pos - off}
	if c := t.metaIn(off, pos-off); c >= 0 {
		return t.bad(64, "snapshot table at offset %d overlaps %s", off, t.what(c))
	}
	t.markMeta(off, pos-off)
	for i, s := range t.snapL1 {
		if c := t.metaIn(s[0], s[1]); c >= 0 {
			return t.bad(off, "the L1 table of snapshot %d at offset %d overlaps %s", i, s[0], t.what(c))
		}
		t.markMeta(s[0], s[1])
	}
	return nil
}

// placeL2Tables checks every L2 table the active L1 table names and marks
// it, before any data cluster is checked against them.
func (t *tables) placeL2Tables() error {
	size := t.src.Size
	for i, e := range t.l1 {
		o := int64(e & l1OffsetMask)
		at := int64(t.h.L1TableOffset) + 8*int64(i)
		switch {
		case o == 0:
			continue
		case o%t.cluster != 0:
			return t.bad(at, "L1 entry %d is 0x%016x: L2 table offset %d is not aligned to the %d-byte cluster", i, e, o, t.cluster)
		case !image.CheckRange(o, t.cluster, size):
			return t.bad(at, "L1 entry %d is 0x%016x: L2 table at offset %d lies past the end of the file (%d bytes)", i, e, o, size)
		}
		if c := t.metaIn(o, t.cluster); c >= 0 {
			return t.bad(at, "L1 entry %d is 0x%016x: L2 table at offset %d lies on %s", i, e, o, t.what(c))
		}
		t.markMeta(o, t.cluster)
	}
	return nil
}

// checkData walks every L2 table and checks each cluster it maps.
func (t *tables) checkData() error {
	h, size := t.h, t.src.Size
	ext := h.Incompatible&incompatExtendedL2 != 0
	eb := t.entryBytes()
	l2Entries := t.cluster / eb
	guestClusters := (int64(h.Size) + t.cluster - 1) / t.cluster
	buf := make([]byte, t.cluster)
	csizeShift := 62 - (h.ClusterBits - 8)
	csizeMask := uint64(1)<<(h.ClusterBits-8) - 1
	offMask := uint64(1)<<csizeShift - 1
	fileEnd512 := (size + 511) / 512 * 512
	for i, l1e := range t.l1 {
		l2 := int64(l1e & l1OffsetMask)
		if l2 == 0 {
			continue
		}
		if err := image.ReadFull(t.src.R, size, buf, l2, t.src.Path, "qcow2", fmt.Sprintf("L2 table of L1 entry %d", i)); err != nil {
			return err
		}
		for k := range l2Entries {
			g := int64(i)*l2Entries + k // guest cluster
			if g >= guestClusters {
				break
			}
			at := l2 + k*eb
			guest := g * t.cluster
			e := binary.BigEndian.Uint64(buf[k*eb:])
			if e&oflagCompressed != 0 {
				o := int64(e & offMask)
				n := int64((e>>csizeShift)&csizeMask+1)*512 - o%512
				switch {
				case o == 0:
					return t.bad(at, "L2 entry for guest offset %d is 0x%016x: a compressed cluster at file offset 0 (the header)", guest, e)
				case o >= size || o+n > fileEnd512:
					return t.bad(at, "L2 entry for guest offset %d is 0x%016x: compressed cluster of %d bytes at file offset %d passes the end of the file (%d bytes)", guest, e, n, o, size)
				}
				if c := t.metaIn(o, n); c >= 0 {
					return t.bad(at, "L2 entry for guest offset %d is 0x%016x: compressed cluster [%d, %d) lies on %s", guest, e, o, o+n, t.what(c))
				}
				if t.data != nil {
					for c := o / t.cluster; c <= (o+n-1)/t.cluster; c++ {
						if t.data.has(c) {
							return t.bad(at, "L2 entry for guest offset %d is 0x%016x: compressed cluster [%d, %d) lies on a host cluster another guest cluster holds plain data in", guest, e, o, o+n)
						}
						t.comp.set(c)
					}
				}
				continue
			}
			o := int64(e & l2OffsetMask)
			read := true // the cluster's bytes are read
			if ext {
				bm := binary.BigEndian.Uint64(buf[k*eb+8:])
				alloc, zero := uint32(bm), uint32(bm>>32)
				switch {
				case alloc&zero != 0:
					return t.bad(at+8, "extended L2 entry for guest offset %d: subcluster bitmap 0x%016x marks subclusters both allocated and zero", guest, bm)
				case o == 0 && alloc != 0:
					return t.bad(at, "extended L2 entry for guest offset %d is 0x%016x with bitmap 0x%016x: allocated subclusters but no host cluster", guest, e, bm)
				case e&oflagZero != 0:
					return t.bad(at, "extended L2 entry for guest offset %d is 0x%016x: reserved bit 0 is set", guest, e)
				}
				read = alloc != 0
			} else if e&oflagZero != 0 {
				if h.Version < 3 {
					// qemu: "Zero cluster entry found in pre-v3 image".
					return t.bad(at, "L2 entry for guest offset %d is 0x%016x: the zero flag (bit 0) is reserved in a version 2 image", guest, e)
				}
				read = false // a zero cluster, maybe preallocated: not read
			}
			if o == 0 {
				continue
			}
			if o%t.cluster != 0 {
				return t.bad(at, "L2 entry for guest offset %d is 0x%016x: data cluster offset %d is not aligned to the %d-byte cluster", guest, e, o, t.cluster)
			}
			if !read {
				continue
			}
			n := min(t.cluster, int64(h.Size)-guest)
			if !image.CheckRange(o, n, size) {
				return t.bad(at, "L2 entry for guest offset %d is 0x%016x: data cluster at file offset %d passes the end of the file (%d bytes): a truncated image", guest, e, o, size)
			}
			c := o / t.cluster
			if t.meta == nil {
				continue
			}
			if t.meta.has(c) {
				return t.bad(at, "L2 entry for guest offset %d is 0x%016x: data cluster at file offset %d lies on %s", guest, e, o, t.what(c))
			}
			if t.data.has(c) || t.comp.has(c) {
				return t.bad(at, "L2 entry for guest offset %d is 0x%016x: data cluster at file offset %d is used by another guest cluster too", guest, e, o)
			}
			t.data.set(c)
		}
	}
	return nil
}
