package job

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/flate"

	"vmimport/upload"
	"vmimport/writer"
	"vmimport/writer/qcow2"
)

// Compress modes of QCOW2 output (QCOW2Spec.Compress, --compress).
const (
	// CompressAuto compresses a block while the upload is the bottleneck
	// (every part sender busy) and stores it plain while the CPU is: the
	// default for uploads. Outputs other than uploads have no link to
	// wait for: auto stores them plain.
	CompressAuto = "auto"
	// CompressAlways compresses every data cluster that shrinks (-c).
	CompressAlways = "always"
	// CompressNever stores every cluster plain.
	CompressNever = "never"
)

// CompressionResult is what compression did to a QCOW2 output.
type CompressionResult struct {
	Mode      string `json:"mode"`
	Algorithm string `json:"algorithm,omitempty"`
	qcow2.CompressionStats
	// Ratio is the compressed clusters' bytes before over after.
	Ratio float64 `json:"ratio,omitempty"`
	// Replayed is the virtual bytes whose decisions came from the run a
	// resume continues.
	Replayed int64 `json:"replayed_bytes,omitempty"`
}

// newQCOW2 makes the QCOW2 encoder of the job's output, and its
// Result.Compression. With --compress auto on an upload, the encoder asks
// the upload block by block whether to compress, replaying the decisions
// an interrupted run recorded.
func (j *run) newQCOW2(target writer.Target, qo qcow2.Options) (*qcow2.Encoder, error) {
	comp := &CompressionResult{Mode: j.s.QCOW2.Compress, Algorithm: qo.Compression}
	if qo.Compression == "" {
		comp.Mode = CompressNever // auto with no upload to wait for, or never
	}
	j.res.Compression = comp
	var q *qcow2.Encoder
	if ut, ok := target.(*upload.Target); ok && comp.Mode == CompressAuto {
		d := newDecisions(qo.VirtualSize, int64(j.s.BlockSize), ut.Backlogged, func() int64 { return q.Next() })
		var err error
		if comp.Replayed, err = d.resume(ut.Recorded()); err != nil {
			j.warn(err.Error())
		}
		qo.Choose = d.choose
		ut.SetRecord(d.record)
	}
	var err error
	q, err = qcow2.NewEncoder(target, qo)
	return q, err
}

// fill takes the encoder's counts.
func (c *CompressionResult) fill(st qcow2.CompressionStats) {
	c.CompressionStats, c.Ratio = st, st.Ratio()
}

// String says it in a few words: "312 of 6400 clusters compressed (2.41x)".
func (c *CompressionResult) String() string {
	n := c.Plain + c.Compressed
	if c.Compressed == 0 {
		return fmt.Sprintf("no cluster compressed (--compress %s)", c.Mode)
	}
	return fmt.Sprintf("%d of %d clusters compressed, %.2fx (--compress %s, %s)", c.Compressed, n, c.Ratio, c.Mode, c.Algorithm)
}

// decisions are the per-block choices of --compress auto. The output of a
// QCOW2 encoder is deterministic for the same choices, and a resumed upload
// keeps the parts an earlier run sent only if it makes the same bytes
// again: so the choices are recorded with the upload's state (a bit per
// block, set for a compressed block, up to the offset the encoder had laid
// out) and a resumed run replays them before it decides anew.
type decisions struct {
	blockSize int64
	bits      []atomic.Uint64
	busy      func() bool // the upload is the bottleneck
	laidOut   func() int64
	// From the run a resume continues: its bits, valid below through.
	replay  []uint64
	through int64
}

// decisionRecord is how decisions are stored in the upload's state.
type decisionRecord struct {
	BlockSize int64 `json:"block_size"`
	// Through is the virtual offset every block below which was decided.
	Through int64 `json:"through"`
	// Bits are the blocks' bits, 64 to a little-endian word, deflated and
	// base64-encoded: a 500 GiB disk in 1 MiB blocks is 64 KiB of bits
	// before deflate, a few hundred bytes after for the usual runs.
	Bits string `json:"bits"`
}

func newDecisions(virtual, blockSize int64, busy func() bool, laidOut func() int64) *decisions {
	n := (virtual + blockSize - 1) / blockSize
	return &decisions{blockSize: blockSize, bits: make([]atomic.Uint64, (n+63)/64), busy: busy, laidOut: laidOut}
}

// choose is qcow2.Options.Choose: called by the workers, concurrently.
func (d *decisions) choose(off int64) bool {
	i := off / d.blockSize
	var c bool
	if off < d.through {
		c = i/64 < int64(len(d.replay)) && d.replay[i/64]&(1<<(i%64)) != 0
	} else {
		c = d.busy()
	}
	if c && i/64 < int64(len(d.bits)) {
		d.bits[i/64].Or(1 << (i % 64))
	}
	return c
}

// record encodes the decisions made below the offset laid out so far
// (upload.Options.Record).
func (d *decisions) record() json.RawMessage {
	through := d.laidOut()
	words := (through/d.blockSize + 63) / 64
	raw := make([]byte, 8*words)
	for i := range words {
		binary.LittleEndian.PutUint64(raw[8*i:], d.bits[i].Load())
	}
	var z bytes.Buffer
	w, _ := flate.NewWriter(&z, flate.BestSpeed)
	w.Write(raw)
	w.Close()
	b, _ := json.Marshal(map[string]decisionRecord{"compress": {
		BlockSize: d.blockSize, Through: through, Bits: base64.StdEncoding.EncodeToString(z.Bytes()),
	}})
	return b
}

// resume takes the decisions an earlier run recorded. A record that does
// not fit this run (another block size, or not a record of ours) is
// ignored: the run then decides anew, and the parts it makes differently
// are sent again.
func (d *decisions) resume(rec json.RawMessage) (replayed int64, err error) {
	if len(rec) == 0 {
		return 0, nil
	}
	var m map[string]decisionRecord
	if err := json.Unmarshal(rec, &m); err != nil {
		return 0, fmt.Errorf("the upload's recorded compression decisions: %w", err)
	}
	r, ok := m["compress"]
	if !ok {
		return 0, nil
	}
	if r.BlockSize != d.blockSize {
		return 0, fmt.Errorf("the upload recorded compression decisions for blocks of %d bytes, this run reads blocks of %d: its parts will be made anew", r.BlockSize, d.blockSize)
	}
	if r.Through < 0 || r.Through > 64*int64(len(d.bits))*d.blockSize {
		return 0, fmt.Errorf("the upload's recorded compression decisions do not fit this disk (through offset %d)", r.Through)
	}
	z, err := base64.StdEncoding.DecodeString(r.Bits)
	if err != nil {
		return 0, fmt.Errorf("the upload's recorded compression decisions: %w", err)
	}
	words := int64(len(d.bits))
	raw, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(z)), 8*words+1))
	if err != nil {
		return 0, fmt.Errorf("the upload's recorded compression decisions: %w", err)
	}
	if int64(len(raw)) > 8*words || len(raw)%8 != 0 || (r.Through+d.blockSize-1)/d.blockSize > 64*int64(len(raw)/8) {
		return 0, fmt.Errorf("the upload's recorded compression decisions do not fit this disk (%d bytes of bits through offset %d)", len(raw), r.Through)
	}
	d.replay = make([]uint64, len(raw)/8)
	for i := range d.replay {
		d.replay[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	d.through = r.Through
	return r.Through, nil
}
