package vdi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// The partitioned ext4 disk every test converts, made once per run.
var shared = &readertest.Shared{Opts: testkit.DiskOptions{SizeMiB: 40, Tail: true}}

func sharedDisk(t *testing.T) string { return shared.Path(t) }

func TestMain(m *testing.M) { os.Exit(readertest.Main(m, shared)) }

func qemuSize(t *testing.T, path string) int64 { return readertest.VirtualSize(t, "vdi", path) }

func TestAgainstQemu(t *testing.T) {
	disk := sharedDisk(t)
	for _, c := range []struct {
		name, opts, sub string
		full            bool
	}{
		{"dynamic", "static=off", "dynamic", true},
		{"static", "static=on", "static", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmp := t.TempDir()
			v := testkit.Convert(t, disk, filepath.Join(tmp, "x.vdi"), "vdi", "-o", c.opts)
			want := testkit.Convert(t, v, filepath.Join(tmp, "want.raw"), "raw")
			im, err := reader.Open(v, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			info := im.Info()
			if info.Format != "vdi" || info.Subformat != c.sub {
				t.Fatalf("format %q subformat %q", info.Format, info.Subformat)
			}
			if q := qemuSize(t, v); info.VirtualSize != q {
				t.Fatalf("virtual size %d, qemu-img info says %d", info.VirtualSize, q)
			}
			if testing.Short() || !c.full {
				quickCheck(t, im, want)
			} else {
				readertest.Check(t, im, want)
			}
		})
	}
}

// TestDiscardedBlocks marks a block discarded (0xFFFFFFFE): it reads as
// zeros, as in qemu-img.
func TestDiscardedBlocks(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "r.raw")
	b := bytes.Repeat([]byte("data"), 4<<20/4)
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		t.Fatal(err)
	}
	v := testkit.Convert(t, raw, filepath.Join(dir, "x.vdi"), "vdi")
	p := edit(t, v, func(b []byte) {
		bmap := binary.LittleEndian.Uint32(b[0x154:])
		binary.LittleEndian.PutUint32(b[bmap+4:], 0xFFFFFFFE)
	})
	want := testkit.Convert(t, p, filepath.Join(dir, "want.raw"), "raw")
	im, err := reader.Open(p, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	quickCheck(t, im, want)
	e, err := im.Extent(1<<20, 3<<20)
	if err != nil || !e.Zero || e.Length != 1<<20 {
		t.Fatalf("Extent = %+v, %v; want a 1 MiB zero run", e, err)
	}
}

func edit(t *testing.T, src string, f func(b []byte)) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f(b)
	p := filepath.Join(t.TempDir(), "edited.vdi")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantErr(t *testing.T, path string, target error, words ...string) {
	t.Helper()
	im, err := reader.Open(path, reader.Options{})
	if err == nil {
		im.Close()
		t.Fatalf("opened; want an error naming %q", words)
	}
	if !errors.Is(err, target) {
		t.Errorf("err = %v; want %v", err, target)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %q; want it to name %q", err, w)
		}
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(raw, bytes.Repeat([]byte("data"), 4<<20/4), 0o644); err != nil {
		t.Fatal(err)
	}
	v := testkit.Convert(t, raw, filepath.Join(dir, "x.vdi"), "vdi")
	le := binary.LittleEndian
	for _, c := range []struct {
		name   string
		edit   func(b []byte)
		target error
		words  []string
	}{
		{"block-map-entry-not-below-blocks-3000", func(b []byte) { le.PutUint32(b[le.Uint32(b[0x154:])+8:], 3000) }, image.ErrCorrupt,
			[]string{"block map entry 2 is 3000", "edited.vdi", "at offset 520"}},
		{"block-map-entry-not-below-blocks", func(b []byte) { le.PutUint32(b[le.Uint32(b[0x154:])+8:], 4) }, image.ErrCorrupt,
			[]string{"block map entry 2 is 4, not below the image's 4 blocks"}},
		{"two-entries-one-block", func(b []byte) { le.PutUint32(b[le.Uint32(b[0x154:])+4:], 0) }, image.ErrCorrupt,
			[]string{"block map entries 0 and 1 both hold block 0", "at offset 516"}},
		{"block-map-offset-past-eof", func(b []byte) { le.PutUint32(b[0x154:], 1<<30) }, image.ErrCorrupt,
			[]string{"block map offset 1073741824 lies past the end of the file", "at offset 340"}},
		{"data-offset-before-block-map", func(b []byte) { le.PutUint32(b[0x158:], 0) }, image.ErrCorrupt,
			[]string{"data offset 0 lies before the block map at offset 512", "at offset 344"}},
		{"block-size-not-power-of-two", func(b []byte) { le.PutUint32(b[0x178:], 3<<20) }, image.ErrCorrupt,
			[]string{"block size 3145728 is not a power of two", "at offset 376"}},
		{"virtual-size-2^60", func(b []byte) { le.PutUint64(b[0x170:], 1<<60) }, image.ErrCorrupt,
			[]string{"virtual size 1152921504606846976", "larger than"}},
		{"disk-larger-than-blocks", func(b []byte) { le.PutUint64(b[0x170:], 5<<20) }, image.ErrCorrupt,
			[]string{"larger than its 4 blocks"}},
		{"block-map-past-eof", func(b []byte) { le.PutUint32(b[0x154:], 1<<30); le.PutUint32(b[0x158:], 1<<30+1<<20) }, image.ErrCorrupt,
			[]string{"block map offset 1073741824 lies past the end of the file"}},
		{"differencing", func(b []byte) { b[0x1B8] = 1 }, image.ErrUnsupported, []string{"differencing"}},
		{"version", func(b []byte) { le.PutUint32(b[0x44:], 0x00010000) }, image.ErrUnsupported, []string{"version 1.0"}},
		{"sector-size", func(b []byte) { le.PutUint32(b[0x168:], 4096) }, image.ErrCorrupt, []string{"sector size 4096"}},
	} {
		t.Run(c.name, func(t *testing.T) { wantErr(t, edit(t, v, c.edit), c.target, c.words...) })
	}
	t.Run("truncated-data", func(t *testing.T) {
		b, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "cut.vdi")
		if err := os.WriteFile(p, b[:len(b)-4096], 0o644); err != nil {
			t.Fatal(err)
		}
		wantErr(t, p, image.ErrCorrupt, "block map entry 3 is 3", "pass the end of the file")
	})
}

// quickCheck compares the whole image with qemu-img's RAW in large reads
// and checks that every zero extent is zero there.
func quickCheck(t *testing.T, im image.Image, rawPath string) {
	t.Helper()
	want, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	if im.Size() != int64(len(want)) {
		t.Fatalf("size %d, qemu-img's RAW has %d", im.Size(), len(want))
	}
	got := make([]byte, 4<<20)
	for off := int64(0); off < im.Size(); off += int64(len(got)) {
		n, err := im.ReadAt(got, off)
		if err != nil && !(err == io.EOF && off+int64(n) == im.Size()) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
		if !bytes.Equal(got[:n], want[off:off+int64(n)]) {
			t.Fatalf("bytes differ from qemu-img's in [%d, +%d)", off, n)
		}
	}
	for off := int64(0); off < im.Size(); {
		e, err := im.Extent(off, im.Size()-off)
		if err != nil || e.Start != off || e.Length <= 0 {
			t.Fatalf("Extent(%d) = %+v, %v", off, e, err)
		}
		if e.Zero && !bytes.Equal(want[off:off+e.Length], make([]byte, e.Length)) {
			t.Fatalf("extent %+v says zero, qemu-img has data", e)
		}
		off += e.Length
	}
}
