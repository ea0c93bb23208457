package qcow2_test

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
)

var be = binary.BigEndian

// layout is where qemu-img put the tables of a small image.
type layout struct {
	b          []byte
	l1, l2, rt int64
}

func (l layout) l2e(i int) []byte { return l.b[l.l2+8*int64(i):] }

// smallQCOW2 makes a 4 MiB image (64 KiB clusters) with data in guest
// clusters 0, 1 and 16: qemu-img puts the refcount table at 64 KiB, the L1
// table at 192 KiB, the L2 table at 256 KiB and the data after it.
func smallQCOW2(t *testing.T, opts ...string) string {
	t.Helper()
	testkit.Need(t, "qemu-io")
	p := filepath.Join(t.TempDir(), "x.qcow2")
	testkit.QemuImg(t, append(append([]string{"create", "-q", "-f", "qcow2"}, opts...), p, "4M")...)
	testkit.Run(t, "qemu-io", "-c", "write -P 0xaa 0 128k", "-c", "write -P 0xbb 1M 64k", p)
	return p
}

func load(t *testing.T, p string) layout {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	l := layout{b: b, l1: int64(be.Uint64(b[40:])), rt: int64(be.Uint64(b[48:]))}
	l.l2 = int64(be.Uint64(b[l.l1:]) & 0x00fffffffffffe00)
	return l
}

// openEdited writes an edited copy of the image and opens it, with qemu-img
// reading the same copy: qemu-img must refuse it too unless qemuReads.
func openEdited(t *testing.T, src string, edit func(l layout) []byte, qemuReads bool) error {
	t.Helper()
	l := load(t, src)
	b := edit(l)
	p := filepath.Join(t.TempDir(), "edited.qcow2")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, qerr := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", p, filepath.Join(t.TempDir(), "q.raw")).CombinedOutput()
	if qemuReads != (qerr == nil) {
		t.Errorf("qemu-img convert: %v %s (want it to read the image: %v)", qerr, out, qemuReads)
	}
	im, err := reader.Open(p, reader.Options{})
	if err != nil {
		return err
	}
	// Open may pass; the bytes must then still be refused on reading.
	defer im.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < im.Size(); off += int64(len(buf)) {
		if _, err := im.ReadAt(buf, off); err != nil {
			return err
		}
	}
	return nil
}

func wantCorrupt(t *testing.T, err error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("read without an error; want one naming %q", words)
	}
	if !errors.Is(err, image.ErrCorrupt) {
		t.Errorf("err = %v; want it to wrap ErrCorrupt (exit 3)", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("err = %q: more than one line", err)
	}
	for _, w := range append(words, "edited.qcow2") {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %q; want it to name %q", err, w)
		}
	}
}

// TestCorruptTables: every table offset that would make the reader read
// the wrong bytes is refused with the file, the offset and the rule.
func TestCorruptTables(t *testing.T) {
	src := smallQCOW2(t)
	put := func(b []byte, v uint64) { be.PutUint64(b, v) }
	cases := []struct {
		name      string
		edit      func(l layout) []byte
		qemuReads bool // qemu-img convert reads the image (we are stricter)
		words     []string
	}{
		{"l2-entry-unaligned", func(l layout) []byte { put(l.l2e(0), 0x8000000000012345); return l.b }, false,
			[]string{"at offset 262144", "L2 entry for guest offset 0 is 0x8000000000012345", "offset 74240 is not aligned to the 65536-byte cluster"}},
		{"l1-entry-unaligned", func(l layout) []byte { put(l.b[l.l1:], 0x8000000000040200); return l.b }, false,
			[]string{"at offset 196608", "L1 entry 0 is 0x8000000000040200", "L2 table offset 262656 is not aligned"}},
		{"data-on-l1-table", func(l layout) []byte { put(l.l2e(0), 0x8000000000000000|uint64(l.l1)); return l.b }, true,
			[]string{"data cluster at file offset 196608 lies on the L1 table"}},
		{"data-on-l2-table", func(l layout) []byte { put(l.l2e(1), 0x8000000000000000|uint64(l.l2)); return l.b }, true,
			[]string{"guest offset 65536", "lies on the L2 table of L1 entry 0"}},
		{"data-on-refcount-table", func(l layout) []byte { put(l.l2e(0), 0x8000000000000000|uint64(l.rt)); return l.b }, true,
			[]string{"lies on the refcount table"}},
		{"data-on-refcount-block", func(l layout) []byte {
			put(l.l2e(0), 0x8000000000000000|be.Uint64(l.b[l.rt:]))
			return l.b
		}, true, []string{"lies on refcount block 0"}},
		{"data-on-header", func(l layout) []byte { put(l.l2e(0), 0x8000000000000200); return l.b }, false,
			[]string{"offset 512 is not aligned"}},
		{"two-guest-clusters-one-host-cluster", func(l layout) []byte { copy(l.l2e(16), l.l2e(0)[:8]); return l.b }, true,
			[]string{"guest offset 1048576", "is used by another guest cluster too"}},
		{"l2-table-on-l1-table", func(l layout) []byte { put(l.b[l.l1:], 0x8000000000000000|uint64(l.l1)); return l.b }, true,
			[]string{"L1 entry 0", "L2 table at offset 196608 lies on the L1 table"}},
		{"l2-table-past-eof", func(l layout) []byte { put(l.b[l.l1:], 0x8000000000000000|1<<40); return l.b }, true,
			[]string{"L2 table at offset 1099511627776 lies past the end of the file"}},
		{"data-past-eof", func(l layout) []byte { put(l.l2e(0), 0x8000000000000000|1<<30); return l.b }, true,
			[]string{"data cluster at file offset 1073741824 passes the end of the file", "truncated"}},
		{"truncated-file", func(l layout) []byte { return l.b[:len(l.b)-4096] }, true,
			[]string{"guest offset 1048576", "passes the end of the file", "truncated"}},
		{"refcount-block-unaligned", func(l layout) []byte { put(l.b[l.rt:], be.Uint64(l.b[l.rt:])+512); return l.b }, true,
			[]string{"refcount table entry 0", "is not aligned"}},
		{"refcount-table-unaligned", func(l layout) []byte { put(l.b[48:], uint64(l.rt)+512); return l.b }, false,
			[]string{"refcount_table_offset 66048 is not aligned"}},
		{"compressed-cluster-past-eof", func(l layout) []byte { put(l.l2e(0), 0x4000000000000000|1<<30); return l.b }, false,
			[]string{"compressed cluster", "passes the end of the file"}},
		{"compressed-cluster-on-l2-table", func(l layout) []byte { put(l.l2e(0), 0x4000000000000000|uint64(l.l2)); return l.b }, false,
			[]string{"compressed cluster", "lies on the L2 table"}},
		// qemu checks a table's offset even when the table is empty
		// (found by FuzzDiff: an image of no snapshots it refuses).
		{"no-snapshots-offset-unaligned", func(l layout) []byte { put(l.b[64:], 384); return l.b }, false,
			[]string{"at offset 64", "snapshots_offset 384 is not aligned to the 65536-byte cluster"}},
		{"no-snapshots-offset-past-int64", func(l layout) []byte { put(l.b[64:], 1<<63); return l.b }, false,
			[]string{"at offset 64", "snapshots_offset 9223372036854775808 with 0 snapshots ends past the largest offset"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantCorrupt(t, openEdited(t, src, c.edit, c.qemuReads), c.words...)
		})
	}
}

// TestCorruptExtendedL2 checks the subcluster bitmaps qemu calls invalid.
func TestCorruptExtendedL2(t *testing.T) {
	src := smallQCOW2(t, "-o", "extended_l2=on")
	for _, c := range []struct {
		name  string
		edit  func(l layout) []byte
		words []string
	}{
		{"allocated-without-host-cluster", func(l layout) []byte {
			be.PutUint64(l.l2e(4), 0)          // guest cluster 2: no host cluster ...
			be.PutUint64(l.l2e(5), 0xffffffff) // ... but all subclusters allocated
			return l.b
		}, []string{"allocated subclusters but no host cluster"}},
		{"allocated-and-zero", func(l layout) []byte {
			be.PutUint64(l.l2e(1), 0x00000001_00000001)
			return l.b
		}, []string{"both allocated and zero"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantCorrupt(t, openEdited(t, src, c.edit, false), c.words...)
		})
	}
}

// TestSnapshots reads the active state of an image with internal
// snapshots: their tables are metadata the data may not overlap, but their
// data is shared with the active image.
func TestSnapshots(t *testing.T) {
	src := smallQCOW2(t)
	testkit.QemuImg(t, "snapshot", "-c", "one", src)
	testkit.Run(t, "qemu-io", "-c", "write -P 0xcc 64k 64k", "-c", "write -P 0xdd 3M 64k", src)
	testkit.QemuImg(t, "snapshot", "-c", "two", src)
	testkit.Run(t, "qemu-io", "-c", "write -P 0xee 2M 4k", src)
	want := testkit.Convert(t, src, filepath.Join(t.TempDir(), "want.raw"), "raw")
	im, err := reader.Open(src, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	got := make([]byte, im.Size())
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	w, _ := os.ReadFile(want)
	if string(got) != string(w) {
		t.Fatal("the active state differs from qemu-img's")
	}
}

// TestCorruptCompressedData: a compressed cluster that does not inflate is
// a corrupt image (exit 3), as qemu refuses it with EIO.
func TestCorruptCompressedData(t *testing.T) {
	plain := smallQCOW2(t)
	src := testkit.Convert(t, plain, filepath.Join(t.TempDir(), "c.qcow2"), "qcow2", "-c")
	err := openEdited(t, src, func(l layout) []byte {
		e := be.Uint64(l.l2e(0))
		off := e & (1<<54 - 1) // 64 KiB clusters: the offset is bits 0..53
		for i := range uint64(64) {
			l.b[off+i] ^= 0x5a
		}
		return l.b
	}, false)
	wantCorrupt(t, err, "reading guest offset 0")
}
