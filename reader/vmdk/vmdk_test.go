package vmdk_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// testDisk is one partitioned ext4 disk shared by the tests of a run, cut
// to a size that is not a multiple of the 64 KiB grain (47 MiB + 9 sectors),
// with random data in its last MiB, so the last grain is partial and holds
// data.
var shared = &readertest.Shared{Opts: testkit.DiskOptions{SizeMiB: 48, PartMiB: 40, DataMiB: 12, Tail: true}, Truncate: 47<<20 + 9*512}

func testDisk(t testing.TB) string { return shared.Path(t) }

func TestMain(m *testing.M) { os.Exit(readertest.Main(m, shared)) }

// TestAgainstQemu converts the disk into every VMDK variant qemu-img writes
// and checks our reader against the RAW bytes.
func TestAgainstQemu(t *testing.T) {
	disk := testDisk(t)
	cases := []struct {
		name, opts string
		slow       bool
	}{
		{"monolithicSparse", "subformat=monolithicSparse", false},
		{"monolithicSparse-compat6", "subformat=monolithicSparse,compat6=on", true},
		{"monolithicSparse-zeroed-grain", "subformat=monolithicSparse,zeroed_grain=on", false},
		{"monolithicSparse-zeroed-grain-compat6", "subformat=monolithicSparse,zeroed_grain=on,compat6=on,adapter_type=lsilogic", true},
		{"monolithicFlat", "subformat=monolithicFlat", false},
		{"twoGbMaxExtentSparse", "subformat=twoGbMaxExtentSparse", false},
		{"twoGbMaxExtentSparse-zeroed-grain", "subformat=twoGbMaxExtentSparse,zeroed_grain=on", true},
		{"twoGbMaxExtentFlat", "subformat=twoGbMaxExtentFlat", true},
		{"streamOptimized", "subformat=streamOptimized", false},
		{"streamOptimized-compat6", "subformat=streamOptimized,compat6=on,hwversion=undefined", true},
		{"streamOptimized-hw", "subformat=streamOptimized,hwversion=14,adapter_type=lsilogic", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.slow && (testing.Short() || readertest.Race) {
				t.Skip("variant skipped with -short and -race")
			}
			if strings.Contains(c.opts, "hwversion=undefined") {
				c.opts = strings.ReplaceAll(c.opts, ",hwversion=undefined", "")
			}
			dir := t.TempDir()
			v := testkit.Convert(t, disk, filepath.Join(dir, "x.vmdk"), "vmdk", "-o", c.opts)
			im, err := reader.Open(v, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			info := im.Info()
			if info.Format != "vmdk" {
				t.Fatalf("format %q", info.Format)
			}
			want := strings.TrimPrefix(strings.Split(c.opts, ",")[0], "subformat=")
			if info.Subformat != want {
				t.Errorf("subformat %q, want %q", info.Subformat, want)
			}
			t.Logf("info: %+v", info)
			readertest.CheckFast(t, im, disk)
		})
	}
}

// TestDelta reads a delta disk (parentFileNameHint) only when backing files
// are allowed, and then through its parent.
func TestDelta(t *testing.T) {
	disk := testDisk(t)
	dir := t.TempDir()
	base := testkit.Convert(t, disk, filepath.Join(dir, "base.vmdk"), "vmdk")
	changed := filepath.Join(dir, "changed.raw")
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	for i := 3 << 20; i < 3<<20+200<<10; i++ {
		b[i] = byte(i * 7)
	}
	clear(b[20<<20 : 21<<20])
	if err := os.WriteFile(changed, b, 0o644); err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "child.vmdk")
	testkit.QemuImg(t, "convert", "-O", "vmdk", "-B", "base.vmdk", "-o", "backing_fmt=vmdk", changed, child)
	if _, err := reader.Open(child, reader.Options{}); !errors.Is(err, image.ErrNotAllowed) || !strings.Contains(err.Error(), "--allow-backing") {
		t.Fatalf("delta without --allow-backing: %v", err)
	}
	im, err := reader.Open(child, reader.Options{AllowBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	info := im.Info()
	if info.BackingFile != "base.vmdk" || info.Backing == nil || info.Backing.Path != base {
		t.Errorf("backing info %+v", info)
	}
	readertest.CheckFast(t, im, changed)
}

// TestMixedExtents reads hand-written descriptors: a FLAT extent at an
// offset, a ZERO extent and a SPARSE extent in one disk, and an ESXi "vmfs"
// descriptor with its -flat.vmdk; qemu-img reads each the same way.
//
// A blank line right before an extent line makes qemu-img 7.2 count that
// extent twice (its sscanf skips the newline); VMware always writes a
// comment line there, and so do these descriptors. qemu-img 7.2 also skips
// ZERO extent lines altogether (the disk comes out shorter), against the
// spec, so the mixed disk is checked against the bytes it was built from.
func TestMixedExtents(t *testing.T) {
	disk := testDisk(t)
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const a, z = 41 << 20, 46 << 20 // the disk's zero gap is [41 MiB, 46 MiB)
	if !bytes.Equal(b[a:z], make([]byte, z-a)) {
		t.Fatal("test disk has data in its zero gap")
	}
	write("mixed-f001.vmdk", append(bytes.Repeat([]byte("junk"), 256<<10), b[:a]...))
	tail := write("tail.raw", b[z:])
	testkit.Convert(t, tail, filepath.Join(dir, "mixed-s002.vmdk"), "vmdk")
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n# Extent description\n"+
		"RW %d FLAT \"mixed-f001.vmdk\" 2048\nRW %d ZERO\nRW %d SPARSE \"mixed-s002.vmdk\"\n\nddb.virtualHWVersion = \"8\"\nddb.adapterType = \"lsilogic\"\n",
		a/512, (z-a)/512, (len(b)-z)/512)
	mixed := write("mixed.vmdk", []byte(desc))
	write("esx-flat.vmdk", b)
	esx := write("esx.vmdk", []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n# Extent description\nRW %d VMFS \"esx-flat.vmdk\"\n\nddb.virtualHWVersion = \"13\"\nddb.adapterType = \"lsilogic\"\nddb.thinProvisioned = \"1\"\n", len(b)/512)))
	want := testkit.FileSHA256(t, disk)
	for _, p := range []string{mixed, esx} {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if !testing.Short() && p == esx {
				if got := testkit.RawSHA256(t, p); got != want {
					t.Fatalf("qemu-img reads %s differently", p)
				}
			}
			im, err := reader.Open(p, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			t.Logf("%+v", im.Info())
			readertest.CheckFast(t, im, disk)
			zero := false
			for off := int64(0); off < im.Size(); {
				e, err := im.Extent(off, im.Size()-off)
				if err != nil {
					t.Fatal(err)
				}
				zero = zero || (e.Zero && e.Start <= a+1<<20 && e.Start+e.Length >= z-1<<20)
				off += e.Length
			}
			if p == mixed && !zero {
				t.Error("the ZERO extent is not reported as zero")
			}
		})
	}
}
