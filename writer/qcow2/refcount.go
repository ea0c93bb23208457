package qcow2

// The refcount table and blocks: counted as clusters are written, each
// block written once the pass has moved past what it covers.

import (
	"encoding/binary"
)

func (e *Encoder) setRT(idx, off int64) {
	for int64(len(e.rt)) <= idx {
		e.rt = append(e.rt, 0)
	}
	e.rt[idx] = uint64(off)
}

// ref adds a reference to host cluster h.
func (e *Encoder) ref(h int64) {
	rb := e.rblock(h / e.g.rbEntries)
	rb.counts[h%e.g.rbEntries]++
}

func (e *Encoder) refcount(h int64) int {
	return int(e.rblock(h / e.g.rbEntries).counts[h%e.g.rbEntries])
}

// rblock returns the open refcount block idx, opening it if needed. Blocks
// are opened in increasing order and at most a few are open at a time.
func (e *Encoder) rblock(idx int64) *rblock {
	for _, rb := range e.open {
		if rb.idx == idx {
			return rb
		}
	}
	var rb *rblock
	if n := len(e.spare); n > 0 {
		rb = e.spare[n-1]
		e.spare = e.spare[:n-1]
		clear(rb.counts)
	} else {
		rb = &rblock{counts: make([]uint16, e.g.rbEntries)}
	}
	rb.idx = idx
	e.open = append(e.open, rb)
	return rb
}

func (e *Encoder) encodeRefblock(rb *rblock) []byte {
	data := e.cluster()
	for i, c := range rb.counts {
		binary.BigEndian.PutUint16(data[i*2:], c)
	}
	e.spare = append(e.spare, rb)
	return data
}
