package vmdk

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"vmimport/reader/image"
)

// sparseExtent reads a hosted sparse extent: plain (monolithicSparse,
// twoGbMaxExtentSparse, versions 1 to 3) or stream-optimized (compressed
// grains behind markers, grain directory possibly in the footer).
type sparseExtent struct {
	r    io.ReaderAt
	size int64 // file size
	path string
	h    *header
	gd   []uint32 // grain directory: sector of each grain table, 0 if none
	// footer is set when the grain directory came from the footer.
	footer bool
	// footerAt is where the footer's metadata marker starts (streams).
	footerAt int64
	gdSector uint64 // where the grain directory in use lies
	// meta is what no grain may overlap: header, descriptor, directories
	// and the footer; gtSecs the sectors of every grain table, sorted.
	meta   image.Regions
	gtSecs []uint32

	gts     gtCache
	grains  sync.Pool // *[]byte of grainBytes, for partial compressed grains
	inBufs  sync.Pool // *[]byte of compressed input
	maxComp int64     // bound on one compressed grain's marker size field
}

// grain classes reported by status.
const (
	classData = iota
	classZero
	classHole // unallocated: zeros, or the parent's bytes in a delta disk
)

// markerSize is a grain marker's header: uint64 LBA, uint32 size.
const markerSize = 12

// Metadata marker types of a stream-optimized extent.
const (
	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3
)

// openSparse reads and checks the header, the footer if any and the grain
// directory of the sparse extent in r.
func openSparse(r io.ReaderAt, size int64, path string, opts *image.Options) (*sparseExtent, error) {
	b := make([]byte, headerSize)
	if err := image.ReadFull(r, size, b, 0, path, "vmdk", "sparse header"); err != nil {
		return nil, err
	}
	h, err := parseHeader(b, 0, size, path, false)
	if err != nil {
		return nil, err
	}
	s := &sparseExtent{r: r, size: size, path: path, h: h}
	gdOff := h.GDOffset
	if h.GDOffset == gdAtEnd {
		f, err := s.readFooter()
		if err != nil {
			return nil, err
		}
		gdOff = f.GDOffset
		s.footer = true
	}
	if h.Unclean {
		opts.Warnf("%s: vmdk: the image was not closed cleanly (uncleanShutdown set); its grain tables may be stale", path)
	}
	s.gd = make([]uint32, h.numGTs) // numGTs*4 <= file size: checked by parseHeader
	if err := s.loadGD(gdOff); err != nil {
		// Fall back on the redundant directory of a hosted sparse extent.
		if !s.footer && h.redundantGD && h.RGDOffset != 0 && h.checkGD(h.RGDOffset, size, path, 48) == nil {
			if err2 := s.loadGD(h.RGDOffset); err2 == nil {
				opts.Warnf("%v; using the redundant grain directory", err)
				err = nil
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if err := s.scan(); err != nil {
		return nil, err
	}
	s.gts.init(h, len(s.gd))
	s.maxComp = h.grainBytes + h.grainBytes/8 + 1024
	gb := h.grainBytes
	s.grains.New = func() any { b := make([]byte, gb); return &b }
	ib := min(gb+2*sector, size)
	s.inBufs.New = func() any { b := make([]byte, 0, ib); return &b }
	return s, nil
}

// readFooter finds the footer of a stream-optimized extent: a header copy
// in the second-to-last sector, followed by the end-of-stream marker (or in
// the last sector when a writer left the marker out), preceded by a footer
// marker.
func (s *sparseExtent) readFooter() (*header, error) {
	if s.size < 3*sector {
		return nil, image.Corruptf(s.path, "vmdk", 0, "grain directory is at the end, but the file (%d bytes) has no room for a footer", s.size)
	}
	b := make([]byte, 2*sector)
	base := s.size/sector*sector - 2*sector
	if err := image.ReadFull(s.r, s.size, b, base, s.path, "vmdk", "footer"); err != nil {
		return nil, err
	}
	off := base
	if string(b[:4]) != magicKDMV {
		off = base + sector
		b = b[sector:]
	}
	if string(b[:4]) != magicKDMV {
		return nil, image.Corruptf(s.path, "vmdk", base, "grain directory is at the end, but no footer is found in the last two sectors")
	}
	f, err := parseHeader(b[:sector], off, s.size, s.path, true)
	if err != nil {
		return nil, err
	}
	h := s.h
	if f.Capacity != h.Capacity || f.GrainSize != h.GrainSize || f.NumGTEsPerGT != h.NumGTEsPerGT || f.Flags&(flagCompressed|flagMarkers|flagZeroedGrain) != h.Flags&(flagCompressed|flagMarkers|flagZeroedGrain) {
		return nil, image.Corruptf(s.path, "vmdk", off, "footer disagrees with the header (capacity %d/%d sectors, grain %d/%d, flags %#x/%#x)", f.Capacity, h.Capacity, f.GrainSize, h.GrainSize, f.Flags, h.Flags)
	}
	s.footerAt = off - sector
	// A footer marker should precede the footer: check it when present.
	m := make([]byte, sector)
	if err := image.ReadFull(s.r, s.size, m, off-sector, s.path, "vmdk", "footer marker"); err == nil {
		if binary.LittleEndian.Uint32(m[8:]) == 0 && binary.LittleEndian.Uint32(m[12:]) != markerFooter {
			return nil, image.Corruptf(s.path, "vmdk", off-sector, "metadata marker before the footer has type %d, not %d (footer)", binary.LittleEndian.Uint32(m[12:]), markerFooter)
		}
	}
	return f, nil
}

// loadGD reads the grain directory at sector gd and checks every grain
// table it names: inside the file, clear of the header and of the
// directory, and no two tables at the same place (a loop would make two
// ranges of the disk share, and overwrite, one table).
func (s *sparseExtent) loadGD(gd uint64) error {
	h := s.h
	if err := h.checkGD(gd, s.size, s.path, 56); err != nil {
		return err
	}
	raw := make([]byte, len(s.gd)*4)
	gdOff := int64(gd) * sector
	s.gdSector = gd
	if err := image.ReadFull(s.r, s.size, raw, gdOff, s.path, "vmdk", "grain directory"); err != nil {
		return err
	}
	type ent struct{ sec, idx uint32 }
	var used []ent
	for i := range s.gd {
		v := binary.LittleEndian.Uint32(raw[i*4:])
		s.gd[i] = v
		if v == 0 {
			continue
		}
		off := int64(v) * sector
		if !image.CheckRange(off, h.gtBytes, s.size) {
			return image.Corruptf(s.path, "vmdk", gdOff+int64(i)*4, "grain table %d at sector %d (%d bytes) lies past the end of the file (%d bytes)", i, v, h.gtBytes, s.size)
		}
		if off < headerSize || (off < gdOff+int64(len(raw)) && gdOff < off+h.gtBytes) {
			return image.Corruptf(s.path, "vmdk", gdOff+int64(i)*4, "grain table %d at sector %d overlaps the header or the grain directory", i, v)
		}
		used = append(used, ent{v, uint32(i)})
	}
	slices.SortFunc(used, func(a, b ent) int { return int(int64(a.sec) - int64(b.sec)) })
	gtSectors := (h.gtBytes + sector - 1) / sector
	for i := 1; i < len(used); i++ {
		if int64(used[i].sec)-int64(used[i-1].sec) < gtSectors {
			return image.Corruptf(s.path, "vmdk", gdOff+int64(used[i].idx)*4, "grain directory loop: grain tables %d and %d overlap at sector %d", used[i-1].idx, used[i].idx, used[i].sec)
		}
	}
	return nil
}

// gte returns the grain table entry of grain g.
func (s *sparseExtent) gte(g uint64) (uint32, error) {
	t := g / uint64(s.h.NumGTEsPerGT)
	if t >= uint64(len(s.gd)) {
		return 0, nil // past the capacity: reads as unallocated
	}
	if s.gd[t] == 0 {
		return 0, nil
	}
	gt, err := s.gts.get(s, uint32(t))
	if err != nil {
		return 0, err
	}
	return gt[g%uint64(s.h.NumGTEsPerGT)], nil
}

func (s *sparseExtent) loadGT(t uint32) ([]uint32, error) {
	off := int64(s.gd[t]) * sector
	raw := make([]byte, s.h.gtBytes)
	if err := image.ReadFull(s.r, s.size, raw, off, s.path, "vmdk", fmt.Sprintf("grain table %d", t)); err != nil {
		return nil, err
	}
	gt := make([]uint32, s.h.NumGTEsPerGT)
	for i := range gt {
		gt[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	return gt, nil
}

func (s *sparseExtent) classify(gte uint32) int {
	switch {
	case gte == 0:
		return classHole
	case gte == 1 && s.h.zeroedGrain:
		return classZero
	}
	return classData
}

// status reports the class of the run at off (extent-relative) and its
// length, at most n. It scans whole grain tables, a bounded number of
// grains per call so one question never walks a huge disk.
func (s *sparseExtent) status(off, n int64) (int64, int, error) {
	gb := s.h.grainBytes
	per := uint64(s.h.NumGTEsPerGT)
	g := uint64(off / gb)
	e, err := s.gte(g)
	if err != nil {
		return 0, 0, err
	}
	class := s.classify(e)
	end := (int64(g) + 1) * gb
	g++
	for budget := 1 << 20; end < off+n && budget > 0; {
		t := g / per
		if t >= uint64(len(s.gd)) {
			break // past the capacity: the caller clips to the extent
		}
		if s.gd[t] == 0 {
			if class != classHole {
				break
			}
			k := per - g%per
			end += int64(k) * gb
			g += k
			budget -= int(k)
			continue
		}
		gt, err := s.gts.get(s, uint32(t))
		if err != nil {
			return 0, 0, err
		}
		for i := g % per; i < per && end < off+n; i++ {
			if s.classify(gt[i]) != class {
				return min(end, off+n) - off, class, nil
			}
			end += gb
			g++
			budget--
		}
	}
	return min(end, off+n) - off, class, nil
}

// readAt fills p from extent offset off; hole fills unallocated ranges.
func (s *sparseExtent) readAt(p []byte, off int64, hole func(p []byte, off int64) error) error {
	gb := s.h.grainBytes
	for len(p) > 0 {
		g := uint64(off / gb)
		in := off - int64(g)*gb
		k := min(int64(len(p)), gb-in)
		e, err := s.gte(g)
		if err != nil {
			return err
		}
		switch s.classify(e) {
		case classHole:
			if err := hole(p[:k], off); err != nil {
				return err
			}
		case classZero:
			clear(p[:k])
		default:
			if s.h.compressed {
				err = s.readCompressed(p[:k], g, in, e)
			} else {
				// Grains that follow each other in the file as on the
				// disk are read with one pread: a 1 MiB block of 64 KiB
				// grains is one request, not 16, for a remote file.
				k = s.contiguous(g, e, k, int64(len(p)))
				err = s.readPlain(p[:k], g, in, e)
			}
			if err != nil {
				return err
			}
		}
		p = p[k:]
		off += k
	}
	return nil
}

// contiguous extends a read of k bytes from grain g (at sector e) over the
// grains after it that hold data stored right after it in the file, up to
// n bytes; a grain table that fails to load ends the run (the next turn
// of readAt reports it).
func (s *sparseExtent) contiguous(g uint64, e uint32, k, n int64) int64 {
	gb := s.h.grainBytes
	step := uint64(gb / sector)
	for next := uint64(1); k < n; next++ {
		if uint64(e)+next*step > math.MaxUint32 {
			break
		}
		e2, err := s.gte(g + next)
		if err != nil || s.classify(e2) != classData || uint64(e2) != uint64(e)+next*step {
			break
		}
		k = min(n, k+gb)
	}
	return k
}

func (s *sparseExtent) readPlain(p []byte, g uint64, in int64, e uint32) error {
	off := int64(e)*sector + in
	if !image.CheckRange(off, int64(len(p)), s.size) {
		return image.Corruptf(s.path, "vmdk", int64(e)*sector, "grain %d at sector %d lies past the end of the file (%d bytes)", g, e, s.size)
	}
	if int64(e)*sector < headerSize {
		return image.Corruptf(s.path, "vmdk", int64(e)*sector, "grain %d points into the header", g)
	}
	n, err := s.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: vmdk: reading grain %d at offset %d: %w", s.path, g, off, err)
}

// readCompressed inflates grain g, whose marker is at sector e, and copies
// the bytes from in to in+len(p) into p. The marker and the compressed bytes
// are read with one pread in the common case.
func (s *sparseExtent) readCompressed(p []byte, g uint64, in int64, e uint32) error {
	mOff := int64(e) * sector
	if mOff < headerSize || mOff > s.size-markerSize {
		return image.Corruptf(s.path, "vmdk", mOff, "grain %d at sector %d lies past the end of the file (%d bytes)", g, e, s.size)
	}
	bp := s.inBufs.Get().(*[]byte)
	defer s.inBufs.Put(bp)
	// Read the marker and the compressed bytes at once. Writers put grains
	// one after the other, so the next grain's marker usually bounds this
	// one: read up to there, or a whole grain's worth when it is not known.
	want := min(int64(cap(*bp)), s.size-mOff)
	if next, err := s.gte(g + 1); err == nil && next > e && int64(next-e)*sector < want {
		want = int64(next-e) * sector
	}
	buf := (*bp)[:want]
	if err := s.readFull(buf, mOff, g); err != nil {
		return err
	}
	lba := binary.LittleEndian.Uint64(buf)
	size := int64(binary.LittleEndian.Uint32(buf[8:]))
	if lba != g*s.h.GrainSize {
		return image.Corruptf(s.path, "vmdk", mOff, "grain marker says LBA %d, but the grain table puts it at LBA %d (grain %d)", lba, g*s.h.GrainSize, g)
	}
	if size == 0 || size > s.maxComp {
		return image.Corruptf(s.path, "vmdk", mOff+8, "grain marker size %d is outside 1..%d for %d-byte grains", size, s.maxComp, s.h.grainBytes)
	}
	if !image.CheckRange(mOff+markerSize, size, s.size) {
		return image.Corruptf(s.path, "vmdk", mOff+8, "compressed grain %d (%d bytes at offset %d) is truncated by the end of the file (%d bytes)", g, size, mOff+markerSize, s.size)
	}
	if what, ok := s.overlap(mOff, markerSize+size); ok {
		return image.Corruptf(s.path, "vmdk", mOff+8, "compressed grain %d [%d, %d) lies on the %s", g, mOff, mOff+markerSize+size, what)
	}
	if int64(len(buf)) < markerSize+size {
		if int64(cap(buf)) < markerSize+size {
			nb := make([]byte, markerSize+size)
			copy(nb, buf)
			buf = nb
			*bp = nb[:0]
		}
		old := len(buf)
		buf = buf[:markerSize+size]
		if err := s.readFull(buf[old:], mOff+int64(old), g); err != nil {
			return err
		}
	}
	comp := buf[markerSize : markerSize+size]
	// Bytes the grain must hold: up to the capacity for the last grain.
	need := min(s.h.grainBytes, s.h.virtualSize-int64(g)*s.h.grainBytes)
	if in == 0 && int64(len(p)) == s.h.grainBytes {
		n, err := inflate(p, comp)
		return s.inflateErr(err, g, mOff, n, need)
	}
	gp := s.grains.Get().(*[]byte)
	defer s.grains.Put(gp)
	n, err := inflate(*gp, comp)
	if err := s.inflateErr(err, g, mOff, n, max(need, in+int64(len(p)))); err != nil {
		return err
	}
	copy(p, (*gp)[in:])
	return nil
}

func (s *sparseExtent) inflateErr(err error, g uint64, mOff int64, n int, need int64) error {
	if err != nil {
		return image.Corruptf(s.path, "vmdk", mOff+markerSize, "compressed grain %d does not inflate: %v", g, err)
	}
	if int64(n) < need {
		return image.Corruptf(s.path, "vmdk", mOff+markerSize, "compressed grain %d inflates to %d bytes, fewer than the %d it must hold", g, n, need)
	}
	return nil
}

func (s *sparseExtent) readFull(p []byte, off int64, g uint64) error {
	n, err := s.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: vmdk: reading grain %d at offset %d: %w", s.path, g, off, err)
}

// gtCache keeps recently used grain tables, a bounded number of them: a
// table of 512 entries is 2 KiB and covers 32 MiB of 64 KiB grains.
// Lookups are one atomic load, without a lock: with a mutex, a worker
// preempted by the OS while holding it stalls the others for a time slice,
// which on a loaded machine made two workers slower than one.
type gtCache struct {
	tables []atomic.Pointer[[]uint32] // one slot per grain directory entry
	mu     sync.Mutex                 // guards ring and next, taken on loads only
	ring   []uint32                   // loaded tables in load order, for eviction
	next   int
	limit  int
}

const gtCacheBytes = 4 << 20

func (c *gtCache) init(h *header, n int) {
	c.limit = max(16, int(gtCacheBytes/h.gtBytes))
	c.tables = make([]atomic.Pointer[[]uint32], n) // n*8 bytes: n*4 <= file size
}

func (c *gtCache) get(s *sparseExtent, t uint32) ([]uint32, error) {
	if p := c.tables[t].Load(); p != nil {
		return *p, nil
	}
	gt, err := s.loadGT(t)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.tables[t].Load(); p != nil {
		return *p, nil
	}
	if len(c.ring) < c.limit {
		c.ring = append(c.ring, t)
	} else {
		c.tables[c.ring[c.next]].Store(nil)
		c.ring[c.next] = t
		c.next = (c.next + 1) % c.limit
	}
	c.tables[t].Store(&gt)
	return gt, nil
}
