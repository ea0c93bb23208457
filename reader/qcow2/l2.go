package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"

	"vmimport/reader/image"
)

// The guest map. An L1 entry names an L2 table of one cluster; each L2
// entry maps one guest cluster: a host cluster (bits 9..55), a zero
// cluster (bit 0, version 3), a compressed cluster (bit 62) or nothing.
// With extended L2 entries (incompatible bit 4) each entry is 16 bytes: the
// 8-byte entry and a bitmap that splits the cluster into 32 subclusters,
// allocated (bits 0..31: read from the host cluster) or zero (bits 32..63),
// the others unallocated (read from the backing file, or zeros).
//
// checkTables has walked every table before any of this runs, so every
// L2 table offset is aligned and inside the file, every data cluster that
// is read lies inside the file, and no bitmap is invalid: lookups trust
// the entries.

// runKind is where the bytes of a run come from.
type runKind uint8

const (
	runZero       runKind = iota // a zero cluster or zero subclusters
	runBacking                   // unallocated: the backing file, else zeros
	runData                      // host bytes from run.host on
	runCompressed                // part of one compressed cluster
)

// run is a stretch of guest bytes of one kind.
type run struct {
	kind runKind
	n    int64  // length in bytes
	host int64  // runData: file offset of the first byte
	l2e  uint64 // runCompressed: the L2 entry
}

// guestMap answers lookups from the L1 table and a bounded cache of L2
// tables.
type guestMap struct {
	src     image.Source
	cluster int64 // cluster size
	ext     bool  // extended L2 entries
	eb      int64 // entry bytes: 8, or 16 when extended
	span    int64 // guest bytes one L2 table maps
	l1      []uint64
	cache   l2Cache
}

func newGuestMap(src image.Source, h *header, l1 []uint64) *guestMap {
	cluster := int64(1) << h.ClusterBits
	m := &guestMap{src: src, cluster: cluster, ext: h.Incompatible&incompatExtendedL2 != 0, eb: 8, l1: l1}
	if m.ext {
		m.eb = 16
	}
	m.span = cluster / m.eb * cluster
	m.cache.init(cluster)
	return m
}

// table returns the L2 table that maps guest offset off, or nil when its
// L1 entry is empty, with the guest offset the table starts at.
func (m *guestMap) table(off int64) ([]byte, int64, error) {
	i := off / m.span
	if i >= int64(len(m.l1)) { // cannot happen: checkTables read the L1 entries for the whole disk
		return nil, 0, image.Corruptf(m.src.Path, "qcow2", -1, "guest offset %d lies past the L1 table", off)
	}
	l2 := int64(m.l1[i] & l1OffsetMask)
	if l2 == 0 {
		return nil, i * m.span, nil
	}
	t, err := m.cache.get(l2, func(b []byte) error {
		return image.ReadFull(m.src.R, m.src.Size, b, l2, m.src.Path, "qcow2", fmt.Sprintf("L2 table of L1 entry %d", i))
	})
	return t, i * m.span, err
}

// piece classifies the bytes of guest cluster k of table t from in (an
// offset inside the cluster) on: the kind, the host offset of byte in for
// data, and where in the cluster the kind ends.
func (m *guestMap) piece(t []byte, k, in int64) (kind runKind, host int64, l2e uint64, end int64) {
	e := binary.BigEndian.Uint64(t[k*m.eb:])
	if e&oflagCompressed != 0 {
		return runCompressed, 0, e, m.cluster
	}
	o := int64(e & l2OffsetMask)
	if !m.ext {
		switch {
		case e&oflagZero != 0:
			return runZero, 0, 0, m.cluster
		case o == 0:
			return runBacking, 0, 0, m.cluster
		}
		return runData, o + in, 0, m.cluster
	}
	bm := binary.BigEndian.Uint64(t[k*m.eb+8:])
	alloc, zero := uint32(bm), uint32(bm>>32)
	sub := m.cluster / 32
	sc := in / sub
	var same uint32 // subclusters of the kind of subcluster sc
	switch {
	case alloc&(1<<sc) != 0:
		kind, host, same = runData, o+in, alloc
	case zero&(1<<sc) != 0:
		kind, same = runZero, zero
	default:
		kind, same = runBacking, ^(alloc | zero)
	}
	// The run of set bits from sc on: the trailing ones of same>>sc.
	count := int64(bits.TrailingZeros32(^(same >> sc)))
	return kind, host, 0, min(m.cluster, (sc+count)*sub)
}

// readRun is the run at guest offset off, at most n bytes long, that one
// read can serve: one kind, and for data one contiguous stretch of the
// file. Compressed runs stay inside their cluster.
func (m *guestMap) readRun(off, n int64) (run, error) {
	t, base, err := m.table(off)
	if err != nil {
		return run{}, err
	}
	limit := min(off+n, base+m.span)
	if t == nil {
		return run{kind: runBacking, n: limit - off}, nil
	}
	k, in := (off-base)/m.cluster, (off-base)%m.cluster
	kind, host, l2e, end := m.piece(t, k, in)
	r := run{kind: kind, host: host, l2e: l2e, n: end - in}
	if kind == runCompressed {
		return r.clip(off, limit), nil
	}
	for pos := off + r.n; pos < limit; {
		k, in = (pos-base)/m.cluster, (pos-base)%m.cluster
		kind, host, _, end = m.piece(t, k, in)
		if kind != r.kind || kind == runCompressed || kind == runData && host != r.host+r.n {
			break
		}
		r.n += end - in
		pos += end - in
	}
	return r.clip(off, limit), nil
}

func (r run) clip(off, limit int64) run {
	r.n = min(r.n, limit-off)
	return r
}

// class groups kinds for Extent: bytes that read as zeros, bytes that
// come from this file, bytes that come from the backing file.
func (m *guestMap) class(kind runKind, backing bool) runKind {
	switch kind {
	case runCompressed:
		return runData
	case runBacking:
		if !backing {
			return runZero
		}
	}
	return kind
}

// An Extent call walks at most maxExtentTables L2 tables (the cache
// entries it may displace) and maxExtentSteps entries or subcluster runs;
// the caller asks again for the rest. Empty L1 entries cost nothing.
const (
	maxExtentTables = 8
	maxExtentSteps  = 1 << 16
)

// extentRun is the run at off, at most n bytes long, of one class (see
// class), within the bounds above. Data whose host bytes are a hole of
// the file (qemu leaves holes where it writes zeros into a new cluster)
// is a zero run, as qemu-img map reports it.
func (m *guestMap) extentRun(off, n int64, backing bool) (runKind, int64, error) {
	var class runKind
	holes := fileMap{fd: m.src.Fd}
	pos, stop := off, off+n
	// add extends the run by k bytes of class c, or reports that it ends.
	add := func(c runKind, k int64) bool {
		if pos > off && c != class {
			return false
		}
		class, pos = c, pos+k
		return true
	}
	for tables, steps := 0, 0; pos < stop && tables < maxExtentTables && steps < maxExtentSteps; {
		t, base, err := m.table(pos)
		if err != nil {
			if pos > off {
				break // answer what is known; the error comes with the next call
			}
			return 0, 0, err
		}
		limit := min(stop, base+m.span)
		if t == nil {
			if !add(m.class(runBacking, backing), limit-pos) {
				break
			}
			continue
		}
		tables++
		for ; pos < limit && steps < maxExtentSteps; steps++ {
			k, in := (pos-base)/m.cluster, (pos-base)%m.cluster
			kind, host, _, end := m.piece(t, k, in)
			size := min(limit-pos, end-in)
			if kind != runData {
				if !add(m.class(kind, backing), size) {
					return class, pos - off, nil
				}
				continue
			}
			for size > 0 {
				k, hole := holes.at(host, size)
				c := runData
				if hole {
					c = runZero
				}
				if !add(c, k) {
					return class, pos - off, nil
				}
				host, size = host+k, size-k
			}
		}
	}
	return class, pos - off, nil
}

// fileMap tells holes of the image file from data, remembering its last
// answer: the data clusters of a run mostly follow one another.
type fileMap struct {
	fd         int
	start, end int64
	hole       bool
}

// at is how many bytes from host, at most n, are all hole or all data.
func (f *fileMap) at(host, n int64) (int64, bool) {
	if f.fd < 0 {
		return n, false
	}
	if host < f.start || host >= f.end {
		k, hole := image.FileExtent(f.fd, host, 1<<62)
		f.start, f.end, f.hole = host, host+k, hole
	}
	return min(n, f.end-host), f.hole
}

// l2Cache holds recently used L2 tables, as the file's bytes, within a
// budget of maxL2CacheBytes (and at least two tables). The tables are
// never changed once loaded, so a reader may keep using one that has
// been evicted meanwhile.
type l2Cache struct {
	mu     sync.Mutex
	bytes  int // one table: a cluster
	max    int // tables kept
	tick   uint64
	tables map[int64]*l2Entry
}

type l2Entry struct {
	b    []byte
	used uint64
}

// maxL2CacheBytes is the L2 cache's budget: 64 tables of 64 KiB clusters
// (32 GiB of guest disk, 16 GiB with extended entries), two of 2 MiB.
const maxL2CacheBytes = 4 << 20

func (c *l2Cache) init(tableBytes int64) {
	c.bytes = int(tableBytes)
	c.max = max(2, int(maxL2CacheBytes/tableBytes))
	c.tables = make(map[int64]*l2Entry, c.max)
}

// get returns the table at file offset off, loading it with load into a
// new buffer of one cluster on a miss. Loads run outside the lock.
func (c *l2Cache) get(off int64, load func([]byte) error) ([]byte, error) {
	c.mu.Lock()
	c.tick++
	if e, ok := c.tables[off]; ok {
		e.used = c.tick
		c.mu.Unlock()
		return e.b, nil
	}
	c.mu.Unlock()
	b := make([]byte, c.bytes)
	if err := load(b); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	if e, ok := c.tables[off]; ok { // another reader loaded it meanwhile
		e.used = c.tick
		return e.b, nil
	}
	if len(c.tables) >= c.max {
		var oldest int64
		var used uint64 = 1<<64 - 1
		for o, e := range c.tables {
			if e.used < used {
				oldest, used = o, e.used
			}
		}
		delete(c.tables, oldest)
	}
	c.tables[off] = &l2Entry{b: b, used: c.tick}
	return b, nil
}
