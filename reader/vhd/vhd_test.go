package vhd_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
	"vmimport/reader/vhd"
)

// The partitioned ext4 disk every test converts, made once per run.
var shared = &readertest.Shared{Opts: testkit.DiskOptions{SizeMiB: 40, Tail: true}}

func sharedDisk(t *testing.T) string { return shared.Path(t) }

func TestMain(m *testing.M) { os.Exit(readertest.Main(m, shared)) }

func qemuSize(t *testing.T, path string) int64 { return readertest.VirtualSize(t, "vpc", path) }

// TestAgainstQemu converts one partitioned ext4 disk into every VHD variant
// qemu-img writes and checks our reader against qemu-img's RAW of each.
func TestAgainstQemu(t *testing.T) {
	disk := sharedDisk(t)
	cases := []struct {
		name, sub string
		opts      []string
		wantType  string
		slow      bool // skipped under -short
	}{
		{"dynamic", "dynamic", []string{"-o", "subformat=dynamic"}, "dynamic", false},
		{"fixed", "fixed", []string{"-o", "subformat=fixed"}, "fixed", true},
		{"dynamic-force-size", "dynamic", []string{"-o", "subformat=dynamic,force_size=on"}, "dynamic", true},
		{"fixed-force-size", "fixed", []string{"-o", "subformat=fixed,force_size=on"}, "fixed", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.slow && testing.Short() {
				t.Skip("slow variant")
			}
			tmp := t.TempDir()
			v := testkit.Convert(t, disk, filepath.Join(tmp, "x.vhd"), "vpc", c.opts...)
			// -f vpc: qemu-img probes a fixed VHD (no footer copy at
			// offset 0) as RAW.
			want := filepath.Join(tmp, "want.raw")
			testkit.QemuImg(t, "convert", "-f", "vpc", "-O", "raw", v, want)
			im, err := reader.Open(v, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			info := im.Info()
			if info.Format != "vhd" || info.Subformat != c.wantType {
				t.Fatalf("format %q subformat %q", info.Format, info.Subformat)
			}
			if q := qemuSize(t, v); info.VirtualSize != q {
				t.Fatalf("virtual size %d, qemu-img info says %d", info.VirtualSize, q)
			}
			// The conformance suite runs on the differencing disk in
			// TestDifferencing, the reader's most complex path.
			quickCheck(t, im, want)
		})
	}
}

// makeParent builds a qemu-made dynamic VHD in dir and returns its path and
// qemu-img's RAW of it.
func makeParent(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	p := testkit.Convert(t, sharedDisk(t), filepath.Join(dir, "parent.vhd"), "vpc", "-o", "subformat=dynamic")
	r := testkit.Convert(t, p, filepath.Join(t.TempDir(), "parent.raw"), "raw")
	b, err := os.ReadFile(r)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

func parentFooter(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[len(b)-512:]
}

// child builds a differencing disk over the parent's footer with known
// writes, and returns it and the bytes the writes must give.
func child(t *testing.T, pfoot, parentRaw []byte, locators map[string]string) ([]byte, []byte) {
	t.Helper()
	be := binary.BigEndian
	bd := &vhd.Builder{
		DiskType:   4,
		Size:       int64(be.Uint64(pfoot[48:])),
		Cyl:        be.Uint16(pfoot[56:]),
		Heads:      pfoot[58],
		SPT:        pfoot[59],
		Creator:    string(pfoot[28:32]),
		UUID:       [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		BlockSize:  2 << 20,
		ParentName: "parent.vhd",
		Locators:   locators,
		Blocks:     map[int64]vhd.BlockData{},
	}
	copy(bd.ParentUUID[:], pfoot[68:84])
	want := bytes.Clone(parentRaw)
	fill := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	bs := int(bd.BlockSize)
	// Block 0: sectors 0..7 (the MBR and what follows) written in the child;
	// the rest of the block comes from the parent although the child's
	// block holds junk there.
	{
		data := fill(bs, 0xEE)
		copy(data, fill(8*512, 0xA1))
		bm := []byte{0xFF}
		bd.Blocks[0] = vhd.BlockData{Bitmap: bm, Data: data}
		copy(want, fill(8*512, 0xA1))
	}
	// Block 3: the whole block written.
	{
		data := make([]byte, bs)
		for i := range data {
			data[i] = byte(i*7 + 3)
		}
		bm := fill(bs/512/8, 0xFF)
		bd.Blocks[3] = vhd.BlockData{Bitmap: bm, Data: data}
		copy(want[3*bs:], data)
	}
	// Block 5: sectors 100, 101 and 1023 written, sector 102 holds junk
	// without its bit.
	{
		data := fill(bs, 0xEE)
		copy(data[100*512:], fill(1024, 0xB2))
		copy(data[1023*512:], fill(512, 0xC3))
		bm := make([]byte, bs/512/8)
		bm[100/8] |= 0x80 >> (100 % 8)
		bm[101/8] |= 0x80 >> (101 % 8)
		bm[1023/8] |= 0x80 >> (1023 % 8)
		bd.Blocks[5] = vhd.BlockData{Bitmap: bm, Data: data}
		copy(want[5*bs+100*512:], fill(1024, 0xB2))
		copy(want[5*bs+1023*512:], fill(512, 0xC3))
	}
	// Block 7: allocated with an empty bitmap: all parent.
	bd.Blocks[7] = vhd.BlockData{Data: fill(bs, 0xEE)}
	return bd.Bytes(), want
}

func TestDifferencing(t *testing.T) {
	dir := t.TempDir()
	parent, parentRaw := makeParent(t, dir)
	pfoot := parentFooter(t, parent)
	c, want := child(t, pfoot, parentRaw, map[string]string{"W2ru": `.\parent.vhd`, "W2ku": `C:\vms\parent.vhd`})
	cpath := filepath.Join(dir, "child.vhd")
	if err := os.WriteFile(cpath, c, 0o644); err != nil {
		t.Fatal(err)
	}
	wantPath := filepath.Join(t.TempDir(), "want.raw")
	if err := os.WriteFile(wantPath, want, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("refused-without-allow-backing", func(t *testing.T) {
		_, err := reader.Open(cpath, reader.Options{})
		if !errors.Is(err, image.ErrNotAllowed) || !strings.Contains(err.Error(), "--allow-backing") {
			t.Fatalf("err = %v, want ErrNotAllowed naming --allow-backing", err)
		}
	})
	t.Run("read", func(t *testing.T) {
		im, err := reader.Open(cpath, reader.Options{AllowBacking: true})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		info := im.Info()
		if info.Subformat != "differencing" || info.BackingFile != "parent.vhd" || info.Backing == nil {
			t.Fatalf("info %+v", info)
		}
		if testing.Short() {
			quickCheck(t, im, wantPath)
		} else {
			readertest.Check(t, im, wantPath)
		}
	})
	t.Run("escaping-parent", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		c2, _ := child(t, pfoot, parentRaw, map[string]string{"W2ru": `..\parent.vhd`})
		p := filepath.Join(sub, "child.vhd")
		if err := os.WriteFile(p, c2, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := reader.Open(p, reader.Options{AllowBacking: true})
		if !errors.Is(err, image.ErrNotAllowed) || !strings.Contains(err.Error(), "outside the image's folder") {
			t.Fatalf("err = %v, want ErrNotAllowed: outside the folder", err)
		}
		// Allowed explicitly, it opens.
		im, err := reader.Open(p, reader.Options{AllowBacking: true, AllowPaths: []string{dir}})
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
	})
	t.Run("parent-by-header-name", func(t *testing.T) {
		// No locators: the header's Unicode parent name, next to the child.
		c4, _ := child(t, pfoot, parentRaw, nil)
		p := filepath.Join(dir, "child4.vhd")
		if err := os.WriteFile(p, c4, 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := reader.Open(p, reader.Options{AllowBacking: true})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		quickCheck(t, im, wantPath)
	})
	t.Run("wrong-parent-uuid", func(t *testing.T) {
		bad := bytes.Clone(pfoot)
		bad[70] ^= 0xFF
		c3, _ := child(t, bad, parentRaw, map[string]string{"W2ru": `.\parent.vhd`})
		p := filepath.Join(dir, "child3.vhd")
		if err := os.WriteFile(p, c3, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := reader.Open(p, reader.Options{AllowBacking: true})
		if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), "UUID") {
			t.Fatalf("err = %v, want a UUID mismatch", err)
		}
	})
}

// damage opens a copy of src changed by edit and returns the error.
func damage(t *testing.T, src string, opts reader.Options, edit func(b []byte) []byte) (image.Image, error) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	b = edit(b)
	p := filepath.Join(t.TempDir(), "bad.vhd")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return reader.Open(p, opts)
}

func wantErr(t *testing.T, im image.Image, err error, target error, words ...string) {
	t.Helper()
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
	raw := filepath.Join(dir, "small.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(8 << 20)
	f.WriteAt([]byte("hello, block 0"), 0)
	f.WriteAt([]byte("hello, block 2"), 5<<20)
	f.Close()
	dyn := testkit.Convert(t, raw, filepath.Join(dir, "d.vhd"), "vpc", "-o", "subformat=dynamic")
	fixed := testkit.Convert(t, raw, filepath.Join(dir, "f.vhd"), "vpc", "-o", "subformat=fixed")
	be := binary.BigEndian
	fixFooter := func(f []byte) { be.PutUint32(f[64:], vhd.Checksum(f[:512], 64)) }
	fixDyn := func(b []byte) { h := b[512:1536]; be.PutUint32(h[36:], vhd.Checksum(h, 36)) }

	t.Run("footer-checksum-fixed", func(t *testing.T) {
		im, err := damage(t, fixed, reader.Options{}, func(b []byte) []byte { b[len(b)-512+50] ^= 1; return b })
		wantErr(t, im, err, image.ErrCorrupt, "footer checksum", "bad checksum", "bad.vhd", "offset")
	})
	t.Run("footer-checksum-both", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			b[len(b)-512+50] ^= 1
			b[50] ^= 1
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "footer checksum", "backup copy at offset 0 is damaged too")
	})
	t.Run("backup-footer-used", func(t *testing.T) {
		var warnings []string
		im, err := damage(t, dyn, reader.Options{Warn: func(m string) { warnings = append(warnings, m) }}, func(b []byte) []byte {
			b[len(b)-512+50] ^= 1
			return b
		})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if len(warnings) != 1 || !strings.Contains(warnings[0], "using the backup copy at offset 0") {
			t.Fatalf("warnings %q", warnings)
		}
		got := make([]byte, 14)
		if _, err := im.ReadAt(got, 5<<20); err != nil || string(got) != "hello, block 2" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	t.Run("dynamic-header-checksum", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte { b[512+30] ^= 1; return b })
		wantErr(t, im, err, image.ErrCorrupt, "dynamic disk header checksum", "offset 548")
	})
	t.Run("bat-entry-past-eof", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			bat := be.Uint64(b[512+16:])
			be.PutUint32(b[bat+4:], 0x00FFFFF0)
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "BAT entry 1 is sector 16777200", "passes the end of the file")
	})
	t.Run("block-size-not-power-of-two", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			be.PutUint32(b[512+32:], 3<<20)
			fixDyn(b)
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "block size 3145728 is not a power of two")
	})
	t.Run("virtual-size-2^60", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			for _, f := range [][]byte{b[:512], b[len(b)-512:]} {
				copy(f[28:], "win ")
				be.PutUint64(f[48:], 1<<60)
				fixFooter(f)
			}
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "current size 1152921504606846976", "larger than")
	})
	t.Run("negative-current-size", func(t *testing.T) {
		// 0xFFFFFFFFFFFFFE00 is -512 as a signed number: the message
		// gives the field as the file holds it.
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			for _, f := range [][]byte{b[:512], b[len(b)-512:]} {
				copy(f[28:], "win ")
				be.PutUint64(f[48:], 0xFFFFFFFFFFFFFE00)
				fixFooter(f)
			}
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "current size 18446744073709551104 is larger than")
	})
	// Blocks that overlap the image's own structures or each other are
	// refused: reading them would give the guest the BAT's or another
	// block's bytes.
	bat := func(b []byte) []byte { return b[be.Uint64(b[512+16:]):] }
	t.Run("block-on-bat", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			be.PutUint32(bat(b), uint32(be.Uint64(b[512+16:])/512))
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "BAT entry 0 is sector 3", "overlaps the BAT")
	})
	t.Run("block-at-offset-0", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte { be.PutUint32(bat(b)[8:], 0); return b })
		wantErr(t, im, err, image.ErrCorrupt, "BAT entry 2 is sector 0", "overlaps the")
	})
	t.Run("block-on-footer", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			// A block that ends exactly at the end of the file: its last
			// sector is the footer.
			be.PutUint32(bat(b)[8:], uint32((len(b)-(2<<20+512))/512))
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "BAT entry 2", "overlaps the footer [")
	})
	t.Run("blocks-overlap", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			be.PutUint32(bat(b)[8:], be.Uint32(bat(b))+8)
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "BAT entries 0 and 2", "overlap")
	})
	t.Run("fixed-file-too-short", func(t *testing.T) {
		im, err := damage(t, fixed, reader.Options{}, func(b []byte) []byte {
			f := b[len(b)-512:]
			copy(f[28:], "win ")
			be.PutUint64(f[48:], 64<<20)
			fixFooter(f)
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "fixed disk of 67108864 bytes")
	})
	t.Run("511-byte-footer", func(t *testing.T) {
		im, err := damage(t, fixed, reader.Options{}, func(b []byte) []byte { return b[:len(b)-1] })
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		got := make([]byte, 14)
		if _, err := im.ReadAt(got, 5<<20); err != nil || string(got) != "hello, block 2" || im.Size() < 8<<20 {
			t.Fatalf("read %q, %v, size %d", got, err, im.Size())
		}
	})
	t.Run("bat-too-small", func(t *testing.T) {
		im, err := damage(t, dyn, reader.Options{}, func(b []byte) []byte {
			be.PutUint32(b[512+28:], 1)
			fixDyn(b)
			return b
		})
		wantErr(t, im, err, image.ErrCorrupt, "BAT of 1 entries")
	})
}
