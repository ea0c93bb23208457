package vmdk_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/readertest"
)

// testDisk is one partitioned ext4 disk shared by the tests of a run, cut
// to a size that is not a multiple of the 64 KiB grain (47 MiB + 9 sectors),
// with random data in its last MiB, so the last grain is partial and holds
// data.
var (
	diskOnce sync.Once
	diskPath string
	diskDir  string
)

func testDisk(t *testing.T) string {
	t.Helper()
	testkit.Need(t, "qemu-img", "sfdisk", "mkfs.ext4")
	diskOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vmdktest")
		if err != nil {
			t.Fatal(err)
		}
		diskDir = dir
		p := testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 48, PartMiB: 40, DataMiB: 12, Tail: true})
		if err := os.Truncate(p, 47<<20+9*512); err != nil {
			t.Fatal(err)
		}
		diskPath = p
	})
	if diskPath == "" {
		t.Fatal("test disk not built")
	}
	return diskPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if diskDir != "" {
		os.RemoveAll(diskDir)
	}
	os.Exit(code)
}

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
			if c.slow && testing.Short() {
				t.Skip("slow variant skipped with -short")
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
			readertest.Check(t, im, disk)
		})
	}
}
