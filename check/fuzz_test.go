package check

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vmimport/check/internal/guestfs"
	"vmimport/check/internal/hive"
	"vmimport/check/internal/initramfs"
	"vmimport/check/internal/ntfs"
	"vmimport/check/internal/part"
)

// The fuzz targets feed the partition table reader, the superblock probe
// and the ext4 and xfs readers with mutated versions of the images in
// testdata (see testdata/README.md). None may panic, loop or allocate
// beyond its bounds, whatever the bytes.

func loadSeed(tb testing.TB, name string) []byte { return loadSeedPrefix(tb, name, -1) }

// loadSeedPrefix decompresses the first n bytes of a seed (all if n < 0).
func loadSeedPrefix(tb testing.TB, name string, n int64) []byte {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	var r io.Reader = z
	if n >= 0 {
		r = io.LimitReader(z, n)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// layout is the list of non-zero sectors of a seed image. A fuzz input is
// the contents of those sectors, one after the other; sparseImage puts them
// back in place, so that the fuzzer mutates metadata, not megabytes of
// zeros.
type layout struct {
	offs []int64
	size int64
}

const layoutSector = 512

func newLayout(img []byte) (layout, []byte) {
	l := layout{size: int64(len(img))}
	var data []byte
	for off := 0; off+layoutSector <= len(img); off += layoutSector {
		s := img[off : off+layoutSector]
		if !bytes.Equal(s, make([]byte, layoutSector)) {
			l.offs = append(l.offs, int64(off))
			data = append(data, s...)
		}
	}
	return l, data
}

type sparseImage struct {
	l    layout
	data []byte
}

func (s sparseImage) Size() int64 { return s.l.size }

func (s sparseImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= s.l.size {
			return n, io.EOF
		}
		sec := pos / layoutSector * layoutSector
		in := pos - sec
		chunk := p[n:min(len(p), n+int(layoutSector-in))]
		clear(chunk)
		if i, ok := slices.BinarySearch(s.l.offs, sec); ok && int64(i)*layoutSector < int64(len(s.data)) {
			src := s.data[int64(i)*layoutSector:]
			if in < int64(len(src)) {
				copy(chunk, src[in:])
			}
		}
		n += len(chunk)
	}
	return n, nil
}

// walk exercises a file system reader the way the rules do.
func walk(fsys guestfs.FS) {
	t := guestfs.NewTree(fsys)
	for _, p := range []string{"/etc/os-release", "/etc/fstab", "/bin/sh", "/longlink", "/many/file-7", "/nope"} {
		t.ReadFile(p, 64<<10)
		t.Exists(p)
	}
	for _, d := range []string{"/", "/many", "/usr/bin", "/etc"} {
		t.ReadDir(d)
	}
}

func fuzzFS(f *testing.F, seeds []string, open func(io.ReaderAt, int64) (guestfs.FS, error)) {
	var l layout
	for i, name := range seeds {
		sl, data := newLayout(loadSeed(f, name))
		if i == 0 {
			l = sl
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img := sparseImage{l, data}
		fsys, err := open(img, img.Size())
		if err != nil {
			return
		}
		walk(fsys)
	})
}

func FuzzExt4(f *testing.F) {
	fuzzFS(f, []string{"ext4.img.gz", "ext2.img.gz"}, func(r io.ReaderAt, n int64) (guestfs.FS, error) { return guestfs.OpenExt4(r, n) })
}

func FuzzXFS(f *testing.F) {
	fuzzFS(f, []string{"xfs.img.gz"}, func(r io.ReaderAt, n int64) (guestfs.FS, error) { return guestfs.OpenXFS(r, n) })
}

// FuzzPartTable reads a whole (small) disk: the MBR, EBR chains and GPT.
func FuzzPartTable(f *testing.F) {
	f.Add(loadSeed(f, "gpt-head.img.gz"))
	f.Add(loadSeed(f, "ebr.img.gz"))
	f.Add(handMadeEBR())
	f.Fuzz(func(t *testing.T, disk []byte) {
		r := &Report{}
		tab := part.Read(bytes.NewReader(disk), int64(len(disk)))
		partitions(r, tab, int64(len(disk)))
		fileSystems(context.Background(), r, bytes.NewReader(disk), tab)
	})
}

// FuzzSuperblock probes the first bytes of a partition.
func FuzzSuperblock(f *testing.F) {
	e := loadSeedPrefix(f, "ext4.img.gz", 2048)
	x := loadSeedPrefix(f, "xfs.img.gz", 512)
	f.Add(e[:2048])
	f.Add(x[:512])
	f.Add(loadSeed(f, "ext2.img.gz")[:2048])
	lvm := make([]byte, 1024)
	copy(lvm[512:], "LABELONE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20\x00\x00\x00LVM2 001")
	f.Add(lvm)
	f.Add([]byte("LUKS\xba\xbe\x00\x02"))
	bt := make([]byte, 0x10048)
	copy(bt[0x10040:], "_BHRfS_M")
	f.Add(bt)
	ntfs := make([]byte, 512)
	copy(ntfs[3:], "NTFS    ")
	ntfs[510], ntfs[511] = 0x55, 0xaa
	f.Add(ntfs)
	swap := make([]byte, 4096)
	copy(swap[4086:], "SWAPSPACE2")
	f.Add(swap)
	f.Fuzz(func(t *testing.T, b []byte) {
		guestfs.ProbeBytes(b)
		guestfs.Probe(bytes.NewReader(b), int64(len(b)))
	})
}

// FuzzInitramfs reads the member names of an initramfs.
func FuzzInitramfs(f *testing.F) {
	f.Add([]byte(makeInitramfs(f, "gzip", true)))
	f.Add([]byte(makeInitramfs(f, "zstd", false)))
	f.Fuzz(func(t *testing.T, b []byte) {
		initramfs.Names(bytes.NewReader(b), int64(len(b)))
	})
}

// handMadeEBR is a 32 KiB disk: a primary partition and an extended one
// holding two logical partitions, in a chain of two EBRs.
func handMadeEBR() []byte {
	d := make([]byte, 32<<10)
	entry := func(sec []byte, i int, status, typ byte, lba, n uint32) {
		e := sec[446+16*i:]
		e[0], e[4] = status, typ
		e[8], e[9], e[10], e[11] = byte(lba), byte(lba>>8), byte(lba>>16), byte(lba>>24)
		e[12], e[13], e[14], e[15] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		sec[510], sec[511] = 0x55, 0xaa
	}
	mbr := d[0:512]
	mbr[0] = 0xeb
	entry(mbr, 0, 0x80, 0x83, 2, 8)
	entry(mbr, 1, 0, 0x05, 16, 48)
	entry(d[16*512:], 0, 0, 0x83, 1, 4) // logical 5 at 17
	entry(d[16*512:], 1, 0, 0x05, 8, 8) // next EBR at 24
	entry(d[24*512:], 0, 0, 0x82, 2, 4) // logical 6 at 26
	return d
}

// walkHive reads a hive as the Windows rules do, and all of it below the
// root, depth first (within the reader's budgets).
func walkHive(b []byte) {
	h, err := hive.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return
	}
	for _, p := range []string{`Select`, `ControlSet001\Services\viostor`, `Microsoft\Windows NT\CurrentVersion`, `DriverDatabase\DeviceIds\PCI`} {
		if k, err := h.Key(p); err == nil {
			k.Value("Start")
		}
	}
	root, err := h.Root()
	if err != nil {
		return
	}
	var walk func(k *hive.Key, depth int)
	walk = func(k *hive.Key, depth int) {
		if depth > 16 {
			return
		}
		vals, _ := k.Values()
		for _, v := range vals {
			v.Data()
			v.Strings()
			v.Uint()
		}
		subs, _ := k.Subkeys()
		for _, s := range subs {
			walk(s, depth+1)
		}
	}
	walk(root, 0)
}

// FuzzHive reads mutated registry hives (testdata/system.hive.gz and
// software.hive.gz, a clean 2012 R2 guest's).
func FuzzHive(f *testing.F) {
	f.Add(loadSeed(f, "system.hive.gz"))
	f.Add(loadSeed(f, "software.hive.gz"))
	f.Fuzz(func(t *testing.T, b []byte) { walkHive(b) })
}

// FuzzNTFS runs the Windows rules over a mutated NTFS system volume: the
// input is the non-zero sectors of testdata/ntfs.img.gz (a clean 2012 R2
// tree, hives included) laid back in place. The rules are called without
// their recover, so that a panic shows.
func FuzzNTFS(f *testing.F) {
	l, data := newLayout(loadSeed(f, "ntfs.img.gz"))
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		img := sparseImage{l, data}
		checkWindows(&Report{}, img, []*Partition{{Index: 1, Size: img.Size(), FS: "ntfs"}})
		if fs, err := ntfs.Open(img, img.Size()); err == nil {
			fs.ReadDir("/Windows/System32/DriverStore/FileRepository")
			fs.ReadDir("/")
			if f, err := fs.Open("/Windows/System32/config/SYSTEM"); err == nil {
				b := make([]byte, min(f.Size(), 1<<20))
				f.ReadAt(b, 0)
			}
		}
	})
}

// TestWindowsMutations runs the Windows rules over a few hundred randomly
// mutated copies of the seeds (bytes changed in the metadata sectors and
// in the hives): each ends, without a panic.
func TestWindowsMutations(t *testing.T) {
	t.Parallel()
	l, data := newLayout(loadSeed(t, "ntfs.img.gz"))
	hives := [][]byte{loadSeed(t, "system.hive.gz"), loadSeed(t, "software.hive.gz")}
	seed := &Report{}
	checkWindows(seed, sparseImage{l, data}, []*Partition{{Index: 1, Size: l.size, FS: "ntfs"}})
	if seed.OS.Version != "2012 R2" || !seed.Has(RuleWinDHCP) || seed.Has(RuleUnchecked) {
		var b strings.Builder
		seed.WriteText(&b, Info)
		t.Fatalf("the seed reads as %+v\n%s", seed.OS, b.String())
	}
	rng := rand.New(rand.NewPCG(23, 1))
	n := 400
	if testing.Short() {
		n = 50
	}
	for i := range n {
		d := bytes.Clone(data)
		for range 1 + rng.IntN(16) {
			d[rng.IntN(len(d))] = byte(rng.UintN(256))
		}
		img := sparseImage{l, d}
		r := &Report{}
		checkWindows(r, img, []*Partition{{Index: 1, Size: img.Size(), FS: "ntfs"}})
		for _, f := range r.Findings {
			if strings.Contains(f.Message, "\n") {
				t.Fatalf("mutation %d: a finding of more than one line: %q", i, f.Message)
			}
		}
		h := bytes.Clone(hives[i%2])
		for range 1 + rng.IntN(8) {
			h[rng.IntN(len(h))] = byte(rng.UintN(256))
		}
		walkHive(h)
	}
}
