package readertest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmimport/internal/testkit"
	"vmimport/reader/image"
)

// Differential testing: mutate a valid image, read it with our reader and
// with `qemu-img convert`, and hold the two to one rule:
//
//   - both read it: the same virtual size and the same bytes;
//   - qemu-img refuses it: we refuse it too;
//   - we refuse what qemu-img reads: fine (we are stricter: data on
//     metadata, data past the end of the file, ...), counted in the log.
//
// Known cases where we differ from qemu-img on purpose, and are right, are
// listed as Differences next to each format's fuzz target, with the reason.

// Diff describes one format under differential test.
type Diff struct {
	// QemuFormat is qemu-img's -f name ("qcow2", "vpc", ...); Format our
	// Info().Format ("qcow2", "vhd", ...).
	QemuFormat, Format string
	// Bases are valid images the mutations start from.
	Bases [][]byte
	// Open is reader.Open with default options (no backing files).
	Open func(path string) (image.Image, error)
	// Allowed are the documented differences.
	Allowed []Difference
}

// Difference is a known, documented case where we differ from qemu-img
// and are right.
type Difference struct {
	Name string
	Why  string
	// Applies reports whether the outcome is this difference.
	Applies func(o *Outcome) bool
}

// Outcome is what both readers made of one mutated image.
type Outcome struct {
	Data     []byte
	Ours     error  // nil: we read every byte
	OurSize  int64  // -1 when we refused
	Qemu     error  // nil: qemu-img converted it
	QemuMsg  string // qemu-img's stderr
	QemuSize int64  // -1 when qemu-img refused
	Same     bool   // both read it, with the same size and bytes
}

// maxCompared is the largest virtual size whose bytes are compared; above
// it only the sizes are (mutations can claim terabytes).
const maxCompared = 16 << 20

// LoadBases reads the base images, gunzipping names that end in .gz.
func LoadBases(tb testing.TB, names ...string) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			tb.Fatal(err)
		}
		if strings.HasSuffix(n, ".gz") {
			r, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				tb.Fatal(err)
			}
			if b, err = io.ReadAll(r); err != nil {
				tb.Fatal(err)
			}
		}
		out = append(out, b)
	}
	return out
}

// Mutate applies a mutation program to a copy of a base image. prog[0]
// picks the base; then records of 13 bytes: a 4-byte little-endian offset
// (taken modulo the file size), an op byte and an 8-byte value. Ops: write
// 1, 2, 4 or 8 bytes of the value (op&3), big-endian unless op&4; with
// op&0x40, add a small shifted delta to the 4- or 8-byte word there (a
// pointer moved by a sector, a cluster, a block); with op&0x80, cut the
// file at the offset.
func (d *Diff) Mutate(prog []byte) []byte {
	if len(d.Bases) == 0 {
		return nil
	}
	base := d.Bases[0]
	if len(prog) > 0 {
		base = d.Bases[int(prog[0])%len(d.Bases)]
		prog = prog[1:]
	}
	b := bytes.Clone(base)
	for len(prog) >= 13 && len(b) > 0 {
		off := int(binary.LittleEndian.Uint32(prog) % uint32(len(b)))
		op := prog[4]
		val := binary.LittleEndian.Uint64(prog[5:])
		prog = prog[13:]
		if op&0x80 != 0 {
			b = b[:off]
			continue
		}
		width := 1 << (op & 3)
		if op&0x40 != 0 {
			width = 4 << (op & 1)
			off -= off % width
		}
		if off+width > len(b) {
			continue
		}
		var order binary.ByteOrder = binary.BigEndian
		if op&4 != 0 {
			order = binary.LittleEndian
		}
		w := b[off : off+width]
		if op&0x40 != 0 {
			delta := int64(int8(val)) << ((val >> 8) % 22)
			if width == 4 {
				order.PutUint32(w, uint32(int64(order.Uint32(w))+delta))
			} else {
				order.PutUint64(w, uint64(int64(order.Uint64(w))+delta))
			}
			continue
		}
		switch width {
		case 1:
			w[0] = byte(val)
		case 2:
			order.PutUint16(w, uint16(val))
		case 4:
			order.PutUint32(w, uint32(val))
		case 8:
			order.PutUint64(w, val)
		}
	}
	return b
}

// RandomProgram makes a mutation program of 1 to 4 records: mostly pointer
// moves and overwrites of non-zero aligned words (tables and headers are
// where the non-zero words of a sparse image are), sometimes a cut.
func (d *Diff) RandomProgram(rng *rand.Rand) []byte {
	base := rng.IntN(len(d.Bases))
	b := d.Bases[base]
	prog := []byte{byte(base)}
	for range 1 + rng.IntN(4) {
		off := rng.IntN(len(b))
		if rng.IntN(4) != 0 {
			// Slide to the next non-zero aligned 4-byte word.
			off -= off % 4
			for i := 0; i < len(b)/4 && binary.LittleEndian.Uint32(b[off:]) == 0; i++ {
				off = (off + 4) % (len(b) - 3)
				off -= off % 4
			}
		}
		var op byte
		var val uint64
		switch r := rng.IntN(10); {
		case r < 5: // move a pointer
			op = 0x40 | byte(rng.IntN(2)) | byte(rng.IntN(2))<<2
			val = uint64(uint8(rng.IntN(7)-3)) | uint64(rng.IntN(22))<<8
		case r < 9: // overwrite a word
			op = byte(rng.IntN(4)) | byte(rng.IntN(2))<<2
			val = rng.Uint64()
			if rng.IntN(2) == 0 {
				val = uint64(rng.IntN(1 << 24)) // small values look like offsets
			}
		default: // cut the file
			op = 0x80
		}
		prog = binary.LittleEndian.AppendUint32(prog, uint32(off))
		prog = append(prog, op)
		prog = binary.LittleEndian.AppendUint64(prog, val)
	}
	return prog
}

// Check runs both readers on data and applies the rule above.
func (d *Diff) Check(t testing.TB, data []byte) *Outcome {
	t.Helper()
	o := d.Run(t, data)
	if o == nil {
		return nil
	}
	bad := ""
	switch {
	case o.Ours == nil && o.Qemu == nil && !o.Same:
		bad = fmt.Sprintf("both read it, but differ: our size %d, qemu-img's %d", o.OurSize, o.QemuSize)
	case o.Ours == nil && o.Qemu != nil:
		bad = fmt.Sprintf("qemu-img refuses it (%s), we read it (%d bytes)", firstLine(o.QemuMsg), o.OurSize)
	}
	if bad == "" {
		return o
	}
	for _, a := range d.Allowed {
		if a.Applies(o) {
			t.Logf("known difference %q: %s", a.Name, a.Why)
			return o
		}
	}
	p := filepath.Join(os.TempDir(), fmt.Sprintf("diff-%s-%x.img", d.Format, sha256.Sum256(data)))
	os.WriteFile(p, data, 0o644)
	t.Fatalf("%s: %s (the image is kept in %s)", d.Format, bad, p)
	return o
}

// Run reads data with both readers. It returns nil when our reader takes
// the mutated file for another format (its magic was hit): there is then
// nothing to compare.
func (d *Diff) Run(t testing.TB, data []byte) *Outcome {
	t.Helper()
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	p := filepath.Join(dir, "m.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	o := &Outcome{Data: data, OurSize: -1, QemuSize: -1}
	var ours [32]byte
	im, err := d.Open(p)
	if err == nil {
		if f := im.Info().Format; f != d.Format {
			im.Close()
			return nil
		}
		o.OurSize = im.Size()
		ours, err = digest(im, o.OurSize <= maxCompared)
		im.Close()
	}
	o.Ours = err
	o.QemuSize, o.QemuMsg, o.Qemu = qemuSize(d.QemuFormat, p)
	if o.Qemu == nil && o.QemuSize <= maxCompared {
		out := filepath.Join(dir, "q.raw")
		msg, err := qemu(30*time.Second, "convert", "-f", d.QemuFormat, "-O", "raw", p, out)
		o.QemuMsg, o.Qemu = msg, err
		if err == nil && o.Ours == nil && o.OurSize == o.QemuSize {
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			io.Copy(h, f)
			f.Close()
			o.Same = bytes.Equal(h.Sum(nil), ours[:])
		}
	} else if o.Qemu == nil {
		o.Same = o.Ours == nil && o.OurSize == o.QemuSize
	}
	return o
}

// digest hashes what a conversion writes: zero runs of the allocation map
// as zeros, the rest as ReadAt returns it. With read false it only walks
// the map (a huge claimed size).
func digest(im image.Image, read bool) ([32]byte, error) {
	h := sha256.New()
	size := im.Size()
	buf := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	for off, calls := int64(0), 0; off < size; calls++ {
		if calls > 1<<21 {
			return [32]byte{}, errors.New("readertest: more than 2^21 extents")
		}
		e, err := im.Extent(off, min(size-off, 1<<20))
		if err != nil {
			return [32]byte{}, err
		}
		if e.Start != off || e.Length <= 0 || e.Length > size-off {
			return [32]byte{}, fmt.Errorf("Extent(%d) = %+v", off, e)
		}
		for p := off; p < off+e.Length; {
			k := min(off+e.Length-p, int64(len(buf)))
			switch {
			case !read:
			case e.Zero:
				h.Write(zero[:k])
			default:
				n, err := im.ReadAt(buf[:k], p)
				if n != int(k) {
					if err == nil || errors.Is(err, io.EOF) {
						err = fmt.Errorf("ReadAt(%d bytes at %d) = %d, %v", k, p, n, err)
					}
					return [32]byte{}, err
				}
				h.Write(buf[:k])
			}
			p += k
		}
		off += e.Length
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, nil
}

func qemu(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

func qemuSize(format, p string) (int64, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", "-f", format, p)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return -1, stderr.String(), err
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return -1, err.Error(), err
	}
	return info.VirtualSize, "", nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// Fuzz is the body of a format's FuzzDiff target: the bases unchanged are
// the seeds, testdata/fuzz/FuzzDiff holds the inputs worth keeping.
func (d *Diff) Fuzz(f *testing.F) {
	for i := range d.Bases {
		f.Add([]byte{byte(i)})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		f.Add(d.RandomProgram(rng))
	}
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 1+13*8 {
			return // a handful of changes at a time
		}
		d.Check(t, d.Mutate(prog))
	})
}

// Random checks n random mutations, from a fixed seed so that a failure
// repeats: the short run CI makes of the differential test.
func (d *Diff) Random(t *testing.T, n int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var refusedBoth, refusedOurs, same, skipped int
	for i := range n {
		prog := d.RandomProgram(rng)
		var o *Outcome
		t.Run(fmt.Sprint(i), func(t *testing.T) { o = d.Check(t, d.Mutate(prog)) })
		switch {
		case o == nil:
			skipped++
		case o.Ours != nil && o.Qemu != nil:
			refusedBoth++
		case o.Ours != nil:
			refusedOurs++
			t.Logf("case %d: we refuse what qemu-img reads: %v", i, o.Ours)
		default:
			same++
		}
	}
	t.Logf("%d mutations: %d read alike, %d refused by both, %d refused by us only, %d read as another format", n, same, refusedBoth, refusedOurs, skipped)
}
