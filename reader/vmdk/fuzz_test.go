package vmdk

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"vmimport/reader/image"
)

var update = flag.Bool("update", false, "regenerate the files in testdata (needs qemu-img)")

// fixtureRaw is the 192 KiB + 3 sectors disk the fixtures hold: text, a
// zero gap and a few distinct bytes at the end.
func fixtureRaw() []byte {
	b := append([]byte{}, smallRaw()[:192<<10+3*512]...)
	clear(b[64<<10 : 100<<10])
	for i := len(b) - 100; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

// TestFixtures regenerates testdata with -update and checks that every
// fixture still reads as the bytes it was made from.
//
//	go test ./reader/vmdk -run TestFixtures -update
func TestFixtures(t *testing.T) {
	raw := fixtureRaw()
	gen := map[string]genOpts{
		"stream-footer-4k.vmdk":   {stream: true, footer: true, grainSectors: 8, gtes: 64},
		"sparse-zeroed-8k.vmdk":   {grainSectors: 16, zeroedGrain: true, redundant: true, gtes: 128},
		"stream-header-64k.vmdk":  {stream: true},
		"sparse-delta-child.vmdk": {parent: "parent.vmdk", grainSectors: 8},
	}
	qemu := map[string]string{
		"qemu-monolithicSparse.vmdk": "subformat=monolithicSparse",
		"qemu-streamOptimized.vmdk":  "subformat=streamOptimized",
	}
	if *update {
		dir := t.TempDir()
		rawPath := filepath.Join(dir, "seed.raw")
		if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		for name, o := range gen {
			if err := os.WriteFile(filepath.Join("testdata", name), genSparse(raw, o), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for name, o := range qemu {
			out, err := exec.Command("qemu-img", "convert", "-O", "vmdk", "-o", o, rawPath, filepath.Join("testdata", name)).CombinedOutput()
			if err != nil {
				t.Fatalf("qemu-img: %v\n%s", err, out)
			}
		}
	}
	for name := range gen {
		if name == "sparse-delta-child.vmdk" {
			continue // needs its parent
		}
		qemu[name] = ""
	}
	for name := range qemu {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		im, err := openBytes(t, b, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := make([]byte, im.Size())
		if _, err := im.ReadAt(got, 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, raw) {
			t.Errorf("%s does not read as the fixture disk", name)
		}
	}
}

func seeds(f *testing.F) [][]byte {
	var out [][]byte
	files, _ := filepath.Glob(filepath.Join("testdata", "*.vmdk"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		f.Fatal("no seeds in testdata")
	}
	return out
}

// exercise opens b as a VMDK and reads a bounded part of it: the first
// 256 KiB, a few reads further on, and up to 1000 allocation runs.
func exercise(b []byte) {
	im, err := Open(image.Source{R: bytes.NewReader(b), Size: int64(len(b)), Path: "fuzz.vmdk", Fd: -1}, &image.Options{})
	if err != nil {
		return
	}
	defer im.Close()
	_ = im.Info()
	buf := make([]byte, 256<<10)
	im.ReadAt(buf, 0)
	for _, off := range []int64{im.Size() / 2, im.Size() - 4096, im.Size() - 1} {
		if off >= 0 {
			im.ReadAt(buf[:8192], off)
		}
	}
	for off, i := int64(0), 0; off < im.Size() && i < 1000; i++ {
		e, err := im.Extent(off, im.Size()-off)
		if err != nil {
			return
		}
		if e.Start != off || e.Length <= 0 {
			panic("bad extent")
		}
		off += e.Length
	}
}

// FuzzSparseHeader feeds header bytes (and a file size) to the header
// checks, then whole files built around the header.
func FuzzSparseHeader(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s[:512], int64(len(s)))
	}
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		if size < 0 {
			size = -size
		}
		h, err := parseHeader(b, 0, size, "fuzz.vmdk", false)
		if err == nil {
			if h.numGTs*4 > uint64(size) || h.virtualSize > image.MaxVirtualSize || h.grainBytes <= 0 {
				t.Fatalf("header accepted with unchecked fields: %+v", h)
			}
		}
		if len(b) >= 512 {
			file := append(append([]byte{}, b...), make([]byte, 4096)...)
			exercise(file)
		}
	})
}

// FuzzDescriptor parses descriptor text and opens it without a file
// opener.
func FuzzDescriptor(f *testing.F) {
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\nRW 4192256 FLAT \"a-f001.vmdk\" 0\nRW 100 ZERO\nRW 8 SPARSE \"c.vmdk\"\nddb.virtualHWVersion = \"14\"\n"))
	f.Add([]byte("createType=\"vmfs\"\nRW 10 VMFS \"x\"\nparentFileNameHint=\"p.vmdk\"\n"))
	f.Add([]byte("createType=\"monolithicFlat\"\nRW 2048 ZERO\n"))
	for _, s := range seeds(f) {
		if len(s) > 2048 {
			f.Add(s[512:2048])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDescriptor(b, "fuzz.vmdk", 0)
		if err != nil {
			return
		}
		for _, e := range d.Extents {
			if e.Sectors <= 0 || e.Offset < 0 || (e.Type != "ZERO" && e.File == "") {
				t.Fatalf("bad extent accepted: %+v", e)
			}
		}
		exercise(b)
	})
}

// FuzzStreamOptimized opens whole files (seeded with stream-optimized and
// sparse extents): header, footer, grain directory and tables, markers and
// compressed grains.
func FuzzStreamOptimized(f *testing.F) {
	for _, s := range seeds(f) {
		// Small seeds only: the fuzzer spends its time minimizing big ones.
		if len(s) <= 32<<10 {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		exercise(b)
	})
}
