package readertest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader/image"
)

// Shared is a test disk made once per test binary (making it is the
// slowest step of a reader's tests), and removed by Main.
type Shared struct {
	Opts testkit.DiskOptions
	// Truncate, if set, cuts the disk to this size once made.
	Truncate int64
	once     sync.Once
	dir      string
	path     string
}

// Path makes the disk on first use and returns its path.
func (s *Shared) Path(t testing.TB) string {
	t.Helper()
	testkit.Need(t, "sfdisk", "mkfs.ext4", "qemu-img")
	s.once.Do(func() {
		dir, err := os.MkdirTemp("", "readertest")
		if err != nil {
			t.Fatal(err)
		}
		s.dir = dir
		p := testkit.MakeDisk(t, dir, s.Opts)
		if s.Truncate > 0 {
			if err := os.Truncate(p, s.Truncate); err != nil {
				t.Fatal(err)
			}
		}
		s.path = p
	})
	if s.path == "" {
		t.Fatal("making the test disk failed")
	}
	return s.path
}

// Main runs a package's tests and removes its shared disks.
func Main(m *testing.M, disks ...*Shared) int {
	code := m.Run()
	for _, s := range disks {
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
	}
	return code
}

// VirtualSize is the virtual size qemu-img gives an image of format.
func VirtualSize(t testing.TB, format, path string) int64 {
	t.Helper()
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(testkit.QemuImg(t, "info", "-f", format, "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize
}

// Seeds reads the images in testdata whose names match glob (gunzipping
// .gz ones; README.md and other .md files are left out).
func Seeds(tb testing.TB, glob string) [][]byte {
	tb.Helper()
	names, _ := filepath.Glob(filepath.Join("testdata", glob))
	var keep []string
	for _, n := range names {
		if !strings.HasSuffix(n, ".md") {
			keep = append(keep, n)
		}
	}
	return LoadBases(tb, keep...)
}

// Sparse is a fuzz input decoded into a file: the units (sectors or
// pages) it gives, zeros elsewhere. The file ends after the highest unit
// given. A multi-megabyte image is then a small input, whose mutations
// fall on metadata, not on megabytes of zeros.
type Sparse struct {
	Units map[int64][]byte
	Size  int64
	unit  int64
}

// SparseCodec is the encoding of Sparse inputs: an optional flags byte,
// then records of a 4-byte little-endian unit index (modulo MaxUnits) and
// Unit bytes of that unit.
type SparseCodec struct {
	Unit     int64
	MaxUnits uint32
	Flags    bool
}

// Decode reads an input; flags is 0 without a flags byte.
func (c SparseCodec) Decode(data []byte) (s *Sparse, flags byte) {
	s = &Sparse{Units: map[int64][]byte{}, unit: c.Unit}
	if c.Flags {
		if len(data) == 0 {
			return s, 0
		}
		flags, data = data[0], data[1:]
	}
	for int64(len(data)) >= 4+c.Unit {
		i := int64(binary.LittleEndian.Uint32(data) % c.MaxUnits)
		s.Units[i] = bytes.Clone(data[4 : 4+c.Unit])
		s.Size = max(s.Size, (i+1)*c.Unit)
		data = data[4+c.Unit:]
	}
	return s, flags
}

// Encode makes the input of a file; flags is left out without Flags.
func (c SparseCodec) Encode(b []byte, flags byte) []byte {
	var out []byte
	if c.Flags {
		out = []byte{flags}
	}
	u := int(c.Unit)
	for i := 0; i < len(b); i += u {
		sec := b[i:min(len(b), i+u)]
		if i+u < len(b) && bytes.Count(sec, []byte{0}) == len(sec) {
			continue
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(i/u))
		out = append(out, sec...)
		out = append(out, make([]byte, u-len(sec))...)
	}
	return out
}

// ReadAt reads the file, zeros where no unit was given.
func (s *Sparse) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off+int64(n) < s.Size {
		pos := off + int64(n)
		k := min(len(p)-n, int(s.unit-pos%s.unit), int(s.Size-pos))
		if u, ok := s.Units[pos/s.unit]; ok {
			copy(p[n:n+k], u[pos%s.unit:])
		} else {
			clear(p[n : n+k])
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// BenchmarkRead reads an image qemu-img makes of a 48 MiB ext4 disk, in
// format with its options, from start to end in 1 MiB reads; open is
// reader.Open (which this package cannot import: the readers' own tests
// import it).
func BenchmarkRead(b *testing.B, open func(string) (image.Image, error), format string, opts ...string) {
	dir := b.TempDir()
	disk := testkit.MakeDisk(b, dir, testkit.DiskOptions{SizeMiB: 48, Tail: true})
	p := testkit.Convert(b, disk, filepath.Join(dir, "x.img"), format, opts...)
	im, err := open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(im.Size())
	b.ReportAllocs()
	for b.Loop() {
		for off := int64(0); off < im.Size(); off += int64(len(buf)) {
			if _, err := im.ReadAt(buf, off); err != nil && off+int64(len(buf)) < im.Size() {
				b.Fatal(err)
			}
		}
	}
}

// Exercise reads an opened image the way the pipeline does, within bounds
// that keep one fuzz run short: what a fuzz target does with an image
// its reader opened.
func Exercise(t *testing.T, im image.Image) {
	_ = im.Info()
	size := im.Size()
	buf := make([]byte, 64<<10)
	off := int64(0)
	for calls := 0; off < size && calls < 64; calls++ {
		e, err := im.Extent(off, size-off)
		if err != nil {
			return
		}
		if e.Start != off || e.Length <= 0 || e.Start+e.Length > size {
			t.Fatalf("Extent(%d) = %+v", off, e)
		}
		n, err := im.ReadAt(buf, off)
		if err == nil && n != len(buf) || n > len(buf) {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		off += e.Length
	}
	for _, o := range []int64{size - 100, size / 2, size - 1} {
		if o >= 0 {
			im.ReadAt(buf[:1000], o)
		}
	}
}
