package vhdx_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
	"vmimport/reader/vhdx"
)

// The partitioned ext4 disk every test converts, made once per run.
var shared = &readertest.Shared{Opts: testkit.DiskOptions{SizeMiB: 40, Tail: true}}

func sharedDisk(t *testing.T) string { return shared.Path(t) }

func TestMain(m *testing.M) { os.Exit(readertest.Main(m, shared)) }

func qemuSize(t *testing.T, path string) int64 { return readertest.VirtualSize(t, "vhdx", path) }

// TestAgainstQemu converts one partitioned ext4 disk into VHDX variants
// qemu-img writes and checks our reader against qemu-img's RAW of each.
func TestAgainstQemu(t *testing.T) {
	disk := sharedDisk(t)
	cases := []struct {
		name, opts, sub string
		full, slow      bool
	}{
		{"dynamic-1M", "subformat=dynamic,block_size=1M", "dynamic", false, false},
		{"dynamic-8M", "subformat=dynamic,block_size=8M", "dynamic", true, false},
		{"dynamic-32M", "subformat=dynamic,block_size=32M", "dynamic", false, false},
		{"fixed-1M", "subformat=fixed,block_size=1M", "fixed", false, false},
		{"fixed-8M", "subformat=fixed,block_size=8M", "fixed", false, true},
		{"fixed-32M", "subformat=fixed,block_size=32M", "fixed", false, false},
		{"fixed-no-zero-state", "subformat=fixed,block_size=8M,block_state_zero=off", "fixed", false, true},
		{"dynamic-log-4M", "subformat=dynamic,block_size=1M,log_size=4M", "dynamic", false, false},
		{"dynamic-log-32M", "subformat=dynamic,block_size=32M,log_size=32M", "dynamic", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.slow && testing.Short() {
				t.Skip("slow variant")
			}
			tmp := t.TempDir()
			v := testkit.Convert(t, disk, filepath.Join(tmp, "x.vhdx"), "vhdx", "-o", c.opts)
			want := testkit.Convert(t, v, filepath.Join(tmp, "want.raw"), "raw")
			im, err := reader.Open(v, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			info := im.Info()
			if info.Format != "vhdx" || info.Subformat != c.sub {
				t.Fatalf("format %q subformat %q", info.Format, info.Subformat)
			}
			if q := qemuSize(t, v); info.VirtualSize != q {
				t.Fatalf("virtual size %d, qemu-img info says %d", info.VirtualSize, q)
			}
			if c.full && !testing.Short() {
				readertest.Check(t, im, want)
			} else {
				quickCheck(t, im, want)
			}
		})
	}
}

func edit(t *testing.T, src string, f func(b []byte)) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f(b)
	p := filepath.Join(t.TempDir(), "edited.vhdx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// smallImage makes a 16 MiB dynamic VHDX with data in blocks 0 and 5 and
// returns it with qemu-img's RAW.
func smallImage(t *testing.T, opts string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	raw := filepath.Join(dir, "small.raw")
	b := make([]byte, 16<<20)
	for i := range 1 << 20 {
		b[i] = byte(i * 31)
	}
	copy(b[5<<20+4096:], bytes.Repeat([]byte("block five "), 1000))
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return testkit.Convert(t, raw, filepath.Join(dir, "small.vhdx"), "vhdx", "-o", opts), raw
}

// TestLogicalSector4096 reads an image whose metadata says 4096-byte
// logical sectors (qemu-img cannot make one, but reads it): the chunk
// ratio changes, not the layout of a disk smaller than a chunk.
func TestLogicalSector4096(t *testing.T) {
	v, want := smallImage(t, "block_size=1M")
	p := edit(t, v, func(b []byte) {
		binary.LittleEndian.PutUint32(b[vhdx.MetaItem(b, vhdx.MetaLogicalSect):], 4096)
	})
	// qemu-img refuses logical sectors other than 512 bytes ("Operation
	// not supported"): compare with the RAW the image was made from.
	im, err := reader.Open(p, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if got := im.Info().Fields[3]; got.Value != "4096" {
		t.Fatalf("field %+v", got)
	}
	quickCheck(t, im, want)
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
	v, _ := smallImage(t, "block_size=1M")
	le := binary.LittleEndian
	t.Run("header-checksums", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { b[64<<10+100] ^= 1; b[128<<10+100] ^= 1 })
		wantErr(t, p, image.ErrCorrupt, "header checksum", "bad checksum", "edited.vhdx", "offset 65540")
	})
	t.Run("one-header-damaged", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { b[vhdx.CurrentHeader(b)+100] ^= 1 })
		var warns []string
		im, err := reader.Open(p, reader.Options{Warn: func(m string) { warns = append(warns, m) }})
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
		if len(warns) != 1 || !strings.Contains(warns[0], "damaged") {
			t.Fatalf("warnings %q", warns)
		}
	})
	t.Run("region-table-checksums", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { b[192<<10+20] ^= 1; b[256<<10+20] ^= 1 })
		wantErr(t, p, image.ErrCorrupt, "region table checksum", "bad checksum")
	})
	t.Run("primary-region-table-damaged", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { b[192<<10+20] ^= 1 })
		var warns []string
		im, err := reader.Open(p, reader.Options{Warn: func(m string) { warns = append(warns, m) }})
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
		if len(warns) != 1 || !strings.Contains(warns[0], "using the copy") {
			t.Fatalf("warnings %q", warns)
		}
	})
	t.Run("bat-entry-past-eof", func(t *testing.T) {
		p := edit(t, v, func(b []byte) {
			bat, _ := vhdx.Regions(b)
			le.PutUint64(b[bat+8:], 6|uint64(1<<30)<<0)
		})
		wantErr(t, p, image.ErrCorrupt, "BAT entry 1 is 0x0000000040000006", "passes the end of the file")
	})
	t.Run("undefined-state", func(t *testing.T) {
		p := edit(t, v, func(b []byte) {
			bat, _ := vhdx.Regions(b)
			b[bat+16] = 4
		})
		wantErr(t, p, image.ErrCorrupt, "BAT entry 2", "state 4")
	})
	t.Run("block-size-not-power-of-two", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { le.PutUint32(b[vhdx.MetaItem(b, vhdx.MetaFileParams):], 3<<20) })
		wantErr(t, p, image.ErrCorrupt, "block size 3145728 is not a power of two")
	})
	t.Run("virtual-size-2^60", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { le.PutUint64(b[vhdx.MetaItem(b, vhdx.MetaVirtualSize):], 1<<60) })
		wantErr(t, p, image.ErrCorrupt, "virtual size 1152921504606846976", "larger than")
	})
	t.Run("logical-sector-size", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { le.PutUint32(b[vhdx.MetaItem(b, vhdx.MetaLogicalSect):], 1000) })
		wantErr(t, p, image.ErrCorrupt, "logical sector size 1000")
	})
	t.Run("truncated", func(t *testing.T) {
		b, _ := os.ReadFile(v)
		p := filepath.Join(t.TempDir(), "short.vhdx")
		os.WriteFile(p, b[:len(b)-(1<<20)], 0o644)
		wantErr(t, p, image.ErrCorrupt, "passes the end of the file")
	})
	// Blocks on the container's own structures or on one another: qemu
	// refuses the first kind; both would give the guest wrong bytes.
	for _, c := range []struct {
		name  string
		entry func(bat, meta uint64, b []byte) (int, uint64)
		words []string
	}{
		{"block-at-offset-0", func(_, _ uint64, _ []byte) (int, uint64) { return 0, 6 },
			[]string{"BAT entry 0 is 0x0000000000000006", "file offset 0 lies in the header section"}},
		{"block-on-bat", func(bat, _ uint64, _ []byte) (int, uint64) { return 0, bat | 6 },
			[]string{"overlaps the BAT region"}},
		{"block-on-metadata", func(_, meta uint64, _ []byte) (int, uint64) { return 0, meta | 6 },
			[]string{"overlaps the metadata region"}},
		{"blocks-share", func(bat, _ uint64, b []byte) (int, uint64) { return 5, le.Uint64(b[bat:]) },
			[]string{"BAT entries 0 and 5", "overlap"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := edit(t, v, func(b []byte) {
				bat, meta := vhdx.Regions(b)
				i, e := c.entry(uint64(bat), uint64(meta), b)
				le.PutUint64(b[bat+8*int64(i):], e)
			})
			wantErr(t, p, image.ErrCorrupt, c.words...)
		})
	}
	t.Run("bat-on-metadata", func(t *testing.T) {
		p := edit(t, v, func(b []byte) {
			_, meta := vhdx.Regions(b)
			vhdx.SetBATOffset(b, uint64(meta))
		})
		wantErr(t, p, image.ErrCorrupt, "BAT region", "overlaps the metadata region")
	})
}

var logGUID = [16]byte{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6}

// setLog points both headers at a log GUID and writes the entries at the
// start of the log, one after the other.
func setLog(b []byte, entries ...[]byte) {
	for _, off := range []int{64 << 10, 128 << 10} {
		copy(b[off+48:], logGUID[:])
	}
	vhdx.FixHeaders(b)
	pos := binary.LittleEndian.Uint64(b[vhdx.CurrentHeader(b)+72:])
	for _, e := range entries {
		copy(b[pos:], e)
		pos += uint64(len(e))
	}
}

// dirtyEntries writes through the log: a page into block 0, zeros over the
// first page of block 0, a new block 2 appended to the file (the file
// grows by 1 MiB) with the same page in it, and the BAT page that maps it.
func dirtyEntries(b []byte, tail2 uint32) [][]byte {
	le := binary.LittleEndian
	bat, _ := vhdx.Regions(b)
	blk0 := int64(le.Uint64(b[bat:]) >> 20 << 20)
	size := uint64(len(b))
	page := bytes.Repeat([]byte("replayed"), 512)
	copy(page, "LEADING!")
	copy(page[4092:], "TRAI")
	batPage := bytes.Clone(b[bat : bat+4096])
	le.PutUint64(batPage[16:24], size|6)
	grown := size + 1<<20
	e1 := vhdx.LogEntryWith(logGUID, 10, 0, size, grown,
		vhdx.Desc{FileOffset: blk0 + 8192, Page: page},
		vhdx.Desc{FileOffset: int64(size) + 8192, Page: page},
		vhdx.Desc{FileOffset: int64(grown) - 4096, Page: page}, // so that qemu's replay grows the file to the whole block
		vhdx.Desc{FileOffset: bat, Page: batPage})
	e2 := vhdx.LogEntryWith(logGUID, 11, tail2, size, grown,
		vhdx.Desc{Zero: true, FileOffset: blk0, Length: 4096})
	return [][]byte{e1, e2}
}

func TestDirtyLog(t *testing.T) {
	v, raw := smallImage(t, "block_size=1M")
	t.Run("replayed", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { setLog(b, dirtyEntries(b, 0)...) })
		// The oracle: qemu-img replays the log when it opens a copy
		// read-write; read-only it refuses the image.
		if err := exec(t, "qemu-img", "convert", "-O", "raw", p, filepath.Join(t.TempDir(), "x.raw")); err == nil {
			t.Errorf("qemu-img read a VHDX with a log to replay read-only")
		}
		c := filepath.Join(t.TempDir(), "copy.vhdx")
		b, _ := os.ReadFile(p)
		os.WriteFile(c, b, 0o644)
		testkit.QemuImg(t, "check", "-r", "all", c)
		want := testkit.Convert(t, c, filepath.Join(t.TempDir(), "want.raw"), "raw")
		var warns []string
		im, err := reader.Open(p, reader.Options{Warn: func(m string) { warns = append(warns, m) }})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if len(warns) != 1 || !strings.Contains(warns[0], "replayed 2 log entries in memory") {
			t.Fatalf("warnings %q", warns)
		}
		quickCheck(t, im, want)
		// The replay did change the disk, and the file was left alone.
		got := make([]byte, 4096)
		im.ReadAt(got, 2<<20+8192)
		if !bytes.HasPrefix(got, []byte("LEADING!")) || !bytes.HasSuffix(got, []byte("TRAI")) {
			t.Fatalf("block 2 after replay starts %q", got[:16])
		}
		if after, _ := os.ReadFile(p); !bytes.Equal(after, b) {
			t.Fatal("the file changed")
		}
		_ = raw
	})
	t.Run("broken-sequence", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { setLog(b, dirtyEntries(b, 4096)...) })
		wantErr(t, p, image.ErrCorrupt, "not closed cleanly", "log sequence broken")
	})
	t.Run("empty-log-read", func(t *testing.T) {
		p := edit(t, v, func(b []byte) { setLog(b) })
		var warns []string
		im, err := reader.Open(p, reader.Options{Warn: func(m string) { warns = append(warns, m) }})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if len(warns) != 1 || !strings.Contains(warns[0], "no valid entry") {
			t.Fatalf("warnings %q", warns)
		}
		quickCheck(t, im, raw)
	})
}

// TestDifferencing builds a differencing VHDX from a qemu-made empty
// dynamic one (qemu-img cannot make a differencing VHDX): a parent locator
// item, the has-parent flag, a sector bitmap block and known writes.
func TestDifferencing(t *testing.T) {
	dir := t.TempDir()
	parent := testkit.Convert(t, sharedDisk(t), filepath.Join(dir, "parent.vhdx"), "vhdx", "-o", "block_size=1M")
	parentRaw, err := os.ReadFile(testkit.Convert(t, parent, filepath.Join(t.TempDir(), "p.raw"), "raw"))
	if err != nil {
		t.Fatal(err)
	}
	pb, err := os.ReadFile(parent)
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.vhdx")
	testkit.QemuImg(t, "create", "-f", "vhdx", "-o", "block_size=1M", empty, "40M")
	b, err := os.ReadFile(empty)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	want := bytes.Clone(parentRaw)
	build := func(rel string) []byte {
		b := bytes.Clone(b)
		fp := vhdx.MetaItem(b, vhdx.MetaFileParams)
		le.PutUint32(b[fp+4:], le.Uint32(b[fp+4:])|2)
		vhdx.AddMetaItem(b, vhdx.MetaParentLoc, 512<<10, vhdx.ParentLocator([][2]string{
			{"parent_linkage", "{" + vhdx.DataWriteGUID(pb) + "}"},
			{"relative_path", rel},
			{"absolute_win32_path", `C:\vms\parent.vhdx`},
		}), true)
		bat, _ := vhdx.Regions(b)
		// qemu marks the blocks of a new image ZERO (block_state_zero);
		// in a child they must be NOT_PRESENT to show the parent.
		clear(b[bat : bat+8*4097])
		end := int64(len(b)+(1<<20)-1) / (1 << 20) * (1 << 20)
		b = append(b, make([]byte, end-int64(len(b)))...)
		// Sector bitmap of chunk 0 (BAT entry 4096 with 1 MiB blocks and
		// 512-byte sectors), then blocks 0 and 3.
		bitmap := make([]byte, 1<<20)
		bitmapOff := end
		le.PutUint64(b[bat+8*4096:], 6|uint64(bitmapOff))
		// Block 0, partially present: sectors 0..7 and 2048+1..2048+2 of
		// the chunk... that is block 0 sectors 0..7 and block 1 none.
		bitmap[0] = 0xFF
		blk0 := bytes.Repeat([]byte{0xEE}, 1<<20)
		copy(blk0, bytes.Repeat([]byte{0xA1}, 8*512))
		copy(blk0[100*512:], bytes.Repeat([]byte{0xB2}, 2*512))
		bitmap[100/8] |= 1 << (100 % 8)
		bitmap[101/8] |= 1 << (101 % 8)
		// Block 3, fully present.
		blk3 := make([]byte, 1<<20)
		for i := range blk3 {
			blk3[i] = byte(i*7 + 3)
		}
		b = append(b, bitmap...)
		le.PutUint64(b[bat+0:], 7|uint64(len(b)))
		b = append(b, blk0...)
		le.PutUint64(b[bat+8*3:], 6|uint64(len(b)))
		b = append(b, blk3...)
		// Block 5: zero over the parent's data.
		le.PutUint64(b[bat+8*5:], 2)
		return b
	}
	copy(want, bytes.Repeat([]byte{0xA1}, 8*512))
	copy(want[100*512:], bytes.Repeat([]byte{0xB2}, 2*512))
	for i := range 1 << 20 {
		want[3<<20+i] = byte(i*7 + 3)
	}
	clear(want[5<<20 : 6<<20])
	child := filepath.Join(dir, "child.vhdx")
	if err := os.WriteFile(child, build(`.\parent.vhdx`), 0o644); err != nil {
		t.Fatal(err)
	}
	wantPath := filepath.Join(t.TempDir(), "want.raw")
	if err := os.WriteFile(wantPath, want, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("refused-without-allow-backing", func(t *testing.T) {
		_, err := reader.Open(child, reader.Options{})
		if !errors.Is(err, image.ErrNotAllowed) || !strings.Contains(err.Error(), "--allow-backing") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("read", func(t *testing.T) {
		im, err := reader.Open(child, reader.Options{AllowBacking: true})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		info := im.Info()
		if info.Subformat != "differencing" || info.BackingFile != "parent.vhdx" || info.Backing == nil {
			t.Fatalf("info %+v", info)
		}
		// The conformance suite runs on dynamic-8M in TestAgainstQemu.
		quickCheck(t, im, wantPath)
	})
	t.Run("escaping-parent", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		os.Mkdir(sub, 0o755)
		p := filepath.Join(sub, "child.vhdx")
		if err := os.WriteFile(p, build(`..\parent.vhdx`), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := reader.Open(p, reader.Options{AllowBacking: true})
		if !errors.Is(err, image.ErrNotAllowed) || !strings.Contains(err.Error(), "outside the image's folder") {
			t.Fatalf("err = %v", err)
		}
	})
}

func exec(t *testing.T, name string, args ...string) error {
	t.Helper()
	return osexec.Command(name, args...).Run()
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
			i := 0
			for got[i] == want[off+int64(i)] {
				i++
			}
			t.Fatalf("bytes differ from qemu-img's at %d (%x vs %x) in [%d, +%d)", off+int64(i), got[i], want[off+int64(i)], off, n)
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
