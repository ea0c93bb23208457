package qcow2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// The end of an image: once the stream has passed the last cluster, the
// last refcount blocks, the refcount table and the L1 table are written,
// and the header, patched in last by the target's Commit.

// Finish writes the last tables and the header, and commits the target.
func (e *Encoder) Finish(ctx context.Context) error {
	if e.err != nil {
		return e.err
	}
	if e.finished {
		return errors.New("qcow2: Finish called twice")
	}
	if e.next != e.o.VirtualSize {
		return e.fail(fmt.Errorf("qcow2: the stream ended at %d bytes of a %d-byte disk", e.next, e.o.VirtualSize))
	}
	e.finished = true
	if err := e.start(); err != nil {
		return err
	}
	e.closeL2()
	if err := e.settle(); err != nil {
		return err
	}
	e.closeCompressed()
	if err := e.settle(); err != nil {
		return err
	}
	// Every refcount block below firstOpen is written; the rest, the
	// refcount table and the L1 table go at the end, and count themselves.
	g := e.g
	p := e.pos / g.cs
	firstOpen := p / g.rbEntries
	nrb, rtClusters := g.tail(p, firstOpen)
	l1Clusters := g.l1Clusters()
	end := p + nrb + rtClusters + l1Clusters
	for h := p; h < end; h++ {
		e.ref(h)
	}
	for i := range nrb {
		rb := e.rblock(firstOpen + i)
		e.setRT(rb.idx, e.pos)
		e.write(e.encodeRefblock(rb))
		e.pos += g.cs
	}
	e.open = e.open[:0]
	rtOff := e.pos
	tb := make([]byte, rtClusters*g.cs)
	for i, v := range e.rt {
		binary.BigEndian.PutUint64(tb[i*8:], v)
	}
	e.write(tb)
	e.pos += int64(len(tb))
	// The L1 table ends the file; like qemu, write only its entries, not
	// the zeros up to the end of its last cluster.
	l1Off := e.pos
	tb = make([]byte, len(e.l1)*8)
	for i, v := range e.l1 {
		binary.BigEndian.PutUint64(tb[i*8:], v)
	}
	e.write(tb)
	if l1Off+l1Clusters*g.cs != end*g.cs || e.written != l1Off+int64(len(tb)) {
		return e.fail(fmt.Errorf("qcow2: internal error: the L1 table at %d ends at %d, not at cluster %d; %d bytes written",
			l1Off, l1Off+l1Clusters*g.cs, end, e.written))
	}
	e.flushBuf()
	if e.err != nil {
		return e.err
	}
	if err := e.t.Commit(ctx, e.header(l1Off, rtOff, rtClusters)); err != nil {
		return e.fail(err)
	}
	return nil
}

// header encodes the image header, followed by an empty header extension
// area (the end marker is zeros).
func (e *Encoder) header(l1Off, rtOff, rtClusters int64) []byte {
	n := headerV3Len
	version := uint32(3)
	if e.o.Compat == Compat010 {
		n, version = headerV2Len, 2
	}
	h := make([]byte, n+8) // + the end-of-extensions marker
	be := binary.BigEndian
	copy(h[0:], "QFI\xfb")
	be.PutUint32(h[4:], version)
	// 8: backing file offset, 16: its size: none
	be.PutUint32(h[20:], uint32(e.g.cbits))
	// qemu counts a disk in 512-byte sectors and would drop a partial
	// last sector: the size is rounded up, the tail reads as zeros (as in
	// qemu-img's own conversion of such a source).
	be.PutUint64(h[24:], uint64(HeaderSize(e.o.VirtualSize)))
	// 32: no encryption
	be.PutUint32(h[36:], uint32(e.g.l1Size))
	be.PutUint64(h[40:], uint64(l1Off))
	be.PutUint64(h[48:], uint64(rtOff))
	be.PutUint32(h[56:], uint32(rtClusters))
	// 60: no snapshots, 64: snapshot table offset
	if version == 3 {
		var incompat uint64
		if e.o.Compression == CompressZstd {
			incompat |= incompatCompressionType
			h[104] = compressionTypeZstd
		}
		be.PutUint64(h[72:], incompat)
		// 80: compatible features, 88: autoclear features: none
		be.PutUint32(h[96:], refcountOrder)
		be.PutUint32(h[100:], headerV3Len)
	}
	return h
}
