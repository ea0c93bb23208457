package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader/image"
	"vmimport/reader/readertest"
)

// smallRaw is a 2.5 MiB + 5 sectors disk: text, random bytes and zero
// gaps, so every grain size leaves a partial last grain.
func smallRaw() []byte {
	rng := rand.New(rand.NewPCG(7, 9))
	b := make([]byte, 5<<19+5*512)
	for off := 0; off < len(b); off += 256 << 10 {
		chunk := b[off:min(len(b), off+256<<10)]
		switch (off >> 18) % 4 {
		case 0:
			copy(chunk, bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), len(chunk)/44+1))
		case 1:
			for i := range chunk {
				chunk[i] = byte(rng.Uint32())
			}
		case 2: // zeros
		case 3:
			for i := 0; i < len(chunk); i += 4096 {
				chunk[i] = byte(i >> 12)
			}
		}
	}
	for i := len(b) - 700; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

func openBytes(t testing.TB, b []byte, path string) (*Image, error) {
	t.Helper()
	return Open(image.Source{R: bytes.NewReader(b), Size: int64(len(b)), Path: path, Fd: -1}, &image.Options{})
}

// TestGeneratedLayouts reads layouts qemu-img does not write (grain sizes
// other than 64 KiB, short grain tables, the grain directory in the footer,
// a redundant directory) and checks them against the source bytes and
// against qemu-img's reading of the same file.
func TestGeneratedLayouts(t *testing.T) {
	raw := smallRaw()
	dir := t.TempDir()
	rawPath := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]genOpts{
		"sparse-grain-4K":          {grainSectors: 8},
		"sparse-grain-128K-gt128":  {grainSectors: 256, gtes: 128},
		"sparse-zeroed-redundant":  {grainSectors: 16, zeroedGrain: true, redundant: true},
		"stream-footer-64K":        {stream: true, footer: true},
		"stream-footer-8K":         {stream: true, footer: true, grainSectors: 16},
		"stream-footer-1M-zeroed":  {stream: true, footer: true, grainSectors: 2048, zeroedGrain: true},
		"stream-header-gd-grain4K": {stream: true, grainSectors: 8, gtes: 64},
	}
	quick := map[string]bool{"sparse-zeroed-redundant": true, "stream-footer-64K": true, "stream-footer-1M-zeroed": true}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			if (testing.Short() || readertest.Race) && !quick[name] {
				t.Skip("variant skipped with -short and -race")
			}
			b := genSparse(raw, o)
			p := filepath.Join(t.TempDir(), "x.vmdk")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if testing.Short() || readertest.Race {
				im, err := openBytes(t, b, p)
				if err != nil {
					t.Fatal(err)
				}
				readertest.CheckFast(t, im, rawPath)
				return
			}
			if got, want := testkit.RawSHA256(t, p), testkit.FileSHA256(t, rawPath); got != want {
				t.Fatalf("qemu-img reads the generated file differently: %s != %s", got, want)
			}
			im, err := openBytes(t, b, p)
			if err != nil {
				t.Fatal(err)
			}
			readertest.CheckFast(t, im, rawPath)
		})
	}
}

// readAll opens b and reads every byte and the allocation map, returning
// the first error.
func readAll(t testing.TB, b []byte, path string) error {
	im, err := openBytes(t, b, path)
	if err != nil {
		return err
	}
	defer im.Close()
	for off := int64(0); off < im.Size(); {
		e, err := im.Extent(off, im.Size()-off)
		if err != nil {
			return err
		}
		if e.Length <= 0 {
			t.Fatalf("Extent(%d) = %+v", off, e)
		}
		off += e.Length
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < im.Size(); off += int64(len(buf)) {
		if _, err := im.ReadAt(buf, off); err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// firstGrain finds the marker sector of the first compressed grain.
func firstGrain(b []byte) int {
	le := binary.LittleEndian
	return int(1+le.Uint64(b[36:])) * 512
}

func TestBadInput(t *testing.T) {
	raw := smallRaw()
	le := binary.LittleEndian
	plain := genSparse(raw, genOpts{})
	plain4K := genSparse(raw, genOpts{grainSectors: 8})
	stream := genSparse(raw, genOpts{stream: true, footer: true})
	streamHdr := genSparse(raw, genOpts{stream: true})
	gdOf := func(b []byte) int { return int(le.Uint64(b[56:])) * 512 }
	gtOf := func(b []byte, t int) int { return int(le.Uint32(b[gdOf(b)+4*t:])) * 512 }
	mod := func(b []byte, f func(c []byte) []byte) []byte { return f(append([]byte{}, b...)) }
	cases := []struct {
		name string
		b    []byte
		rule string
	}{
		{"truncated grain (plain)", plain[:len(plain)-66000], "pass the end of the file"},
		{"truncated grain (stream)", mod(streamHdr, func(c []byte) []byte {
			// Move grain 0 to the end of the file, cut in half.
			g := firstGrain(c)
			n := int(le.Uint32(c[g+8:]))
			le.PutUint32(c[gtOf(c, 0):], uint32(len(c)/512))
			return append(c, c[g:g+12+n/2]...)
		}), "truncated by the end of the file"},
		{"marker with wrong size", mod(stream, func(c []byte) []byte {
			le.PutUint32(c[firstGrain(c)+8:], 0x7fffffff)
			return c
		}), "grain marker size"},
		{"marker with short size", mod(stream, func(c []byte) []byte {
			le.PutUint32(c[firstGrain(c)+8:], 20)
			return c
		}), "does not inflate"},
		{"marker with wrong LBA", mod(stream, func(c []byte) []byte {
			le.PutUint64(c[firstGrain(c):], 999)
			return c
		}), "grain marker says LBA"},
		{"grain table pointing past the end", mod(plain, func(c []byte) []byte {
			le.PutUint32(c[gtOf(c, 0)+4:], 0x7ffffff0)
			return c
		}), "grain table 0 entry 1 (grain 1) is sector 2147483632: its 65536 bytes at offset 1099511619584 pass the end of the file"},
		// Grains on the extent's own structures or on one another.
		{"grain on its grain table", mod(plain, func(c []byte) []byte {
			le.PutUint32(c[gtOf(c, 0):], uint32(gtOf(c, 0)/512))
			return c
		}), "lie on the grain table at sector"},
		{"grain on the grain directory", mod(plain, func(c []byte) []byte {
			le.PutUint32(c[gtOf(c, 0):], uint32(gdOf(c)/512))
			return c
		}), "lie on the grain directory"},
		{"two grains share one", mod(plain, func(c []byte) []byte {
			le.PutUint32(c[gtOf(c, 0)+4:], le.Uint32(c[gtOf(c, 0):]))
			return c
		}), "another grain uses the bytes"},
		{"grains overlap off the grid", mod(plain, func(c []byte) []byte {
			le.PutUint32(c[gtOf(c, 0)+4:], le.Uint32(c[gtOf(c, 0):])+1)
			return c
		}), "two grains overlap"},
		{"stream grain marker on its grain table", mod(stream, func(c []byte) []byte {
			gd := int(le.Uint64(c[len(c)-1024+56:])) * 512
			gt := int(le.Uint32(c[gd:])) * 512
			le.PutUint32(c[gt:], uint32(gt/512))
			return c
		}), "its marker at offset"},
		{"stream grain running over its grain table", mod(stream, func(c []byte) []byte {
			gd := int(le.Uint64(c[len(c)-1024+56:])) * 512
			gt := int(le.Uint32(c[gd:])) * 512
			// The last grain before the table claims to run into it.
			last := 0
			for i := 0; i < 512; i++ {
				if v := int(le.Uint32(c[gt+4*i:])) * 512; v > last && v < gt {
					last = v
				}
			}
			le.PutUint32(c[last+8:], uint32(gt-last))
			return c
		}), "lies on the grain table"},
		{"grain directory pointing past the end", mod(plain, func(c []byte) []byte {
			le.PutUint32(c[gdOf(c):], 0x7ffffff0)
			return c
		}), "lies past the end of the file"},
		{"grain directory loop", mod(plain4K, func(c []byte) []byte {
			le.PutUint32(c[gdOf(c)+4:], le.Uint32(c[gdOf(c):]))
			return c
		}), "grain directory loop"},
		{"grain table inside the directory", mod(plain, func(c []byte) []byte {
			le.PutUint32(c[gdOf(c):], uint32(gdOf(c)/512))
			return c
		}), "overlaps the header or the grain directory"},
		{"2^40 grains", mod(plain, func(c []byte) []byte {
			le.PutUint64(c[12:], 1<<40*128)
			return c
		}), "exceeds the 64 TiB limit"},
		{"2^40 grains of one sector", mod(plain, func(c []byte) []byte {
			le.PutUint64(c[12:], 1<<40)
			le.PutUint64(c[20:], 1)
			return c
		}), "exceeds the 64 TiB limit"},
		{"directory larger than the file", mod(plain, func(c []byte) []byte {
			le.PutUint64(c[12:], 1<<36)
			le.PutUint32(c[44:], 1)
			return c
		}), "more than the file's"},
		{"grain size not a power of two", mod(plain, func(c []byte) []byte {
			le.PutUint64(c[20:], 100)
			return c
		}), "not a power of two"},
		{"corrupted deflate stream", mod(stream, func(c []byte) []byte {
			g := firstGrain(c)
			for i := g + 20; i < g+60; i++ {
				c[i] ^= 0x5a
			}
			return c
		}), "does not inflate"},
		{"bad checksum", mod(stream, func(c []byte) []byte {
			g := firstGrain(c)
			n := int(le.Uint32(c[g+8:]))
			c[g+12+n-1] ^= 1
			return c
		}), "does not inflate"},
		{"text-mode damage", mod(plain, func(c []byte) []byte {
			c[75] = '\n'
			return c
		}), "text mode"},
		{"footer missing", stream[:len(stream)-1536], "no footer"},
		{"footer disagrees", mod(stream, func(c []byte) []byte {
			le.PutUint64(c[len(c)-1024+12:], 8)
			return c
		}), "footer disagrees"},
		{"descriptor past the end", mod(plain, func(c []byte) []byte {
			le.PutUint64(c[28:], 1<<30)
			return c
		}), "embedded descriptor"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := readAll(t, c.b, "bad.vmdk")
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, image.ErrCorrupt) {
				t.Errorf("error %v does not wrap ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), c.rule) || !strings.Contains(err.Error(), "bad.vmdk") {
				t.Errorf("error %q does not name the file and the rule %q", err, c.rule)
			}
			t.Log(err)
		})
	}
}

// TestDescriptorPaths: extents must stay in the descriptor's folder.
func TestDescriptorPaths(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "vm")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "ok-flat.vmdk"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "x"), filepath.Join(sub, "link-flat.vmdk")); err != nil {
		t.Fatal(err)
	}
	open := func(extent string, o image.Options) error {
		desc := "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"" + extent + "\" 0\n"
		p := filepath.Join(sub, "d.vmdk")
		if err := os.WriteFile(p, []byte(desc), 0o644); err != nil {
			t.Fatal(err)
		}
		o.Open = func(string, int) (image.Image, error) { return nil, errors.New("unused") }
		im, err := Open(image.Source{R: bytes.NewReader([]byte(desc)), Size: int64(len(desc)), Path: p, Fd: -1}, &o)
		if err == nil {
			im.Close()
		}
		return err
	}
	if err := open("ok-flat.vmdk", image.Options{}); err != nil {
		t.Fatalf("extent in the folder refused: %v", err)
	}
	for _, name := range []string{"/etc/shadow", "../x", "link-flat.vmdk", "/dev/zero"} {
		err := open(name, image.Options{})
		if !errors.Is(err, image.ErrNotAllowed) {
			t.Errorf("extent %q: error %v, want ErrNotAllowed", name, err)
		} else {
			t.Log(err)
		}
	}
	if err := open("../x", image.Options{AllowPaths: []string{dir}}); err != nil {
		t.Errorf("extent ../x with --allow-path: %v", err)
	}
	// A descriptor handed over without an opener (inside an OVA) opens nothing.
	desc := "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"ok-flat.vmdk\" 0\n"
	_, err := Open(image.Source{R: strings.NewReader(desc), Size: int64(len(desc)), Path: filepath.Join(sub, "e.vmdk"), Fd: -1}, &image.Options{})
	if !errors.Is(err, image.ErrNotAllowed) {
		t.Errorf("descriptor without opener: %v, want ErrNotAllowed", err)
	}
}

func TestDescriptorParse(t *testing.T) {
	text := "# Disk DescriptorFile\r\nversion=1\r\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n" +
		"RW 4192256 FLAT \"a b-f001.vmdk\" 0\nRDONLY 100 ZERO\nRW 8 SPARSE \"c.vmdk\"\n\n#DDB\nddb.virtualHWVersion = \"14\"\nddb.adapterType=\"lsilogic\"\n\x00\x00"
	d, err := parseDescriptor([]byte(text), "d.vmdk", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Extents) != 3 || d.Extents[0].File != "a b-f001.vmdk" || d.Extents[1].Type != "ZERO" || d.Extents[2].Sectors != 8 {
		t.Errorf("extents %+v", d.Extents)
	}
	if d.get("ddb.virtualHWVersion") != "14" || d.get("ddb.adapterType") != "lsilogic" || d.get("createType") != "twoGbMaxExtentFlat" {
		t.Errorf("keys %v", d.Keys)
	}
	for _, bad := range []string{"RW x FLAT \"a\"", "RW 10 FLAT", "RW 10 FLAT \"a", "RW 10 ZERO \"a\"", "junk line", "RW -5 FLAT \"a\"", "RW 10 FLAT \"a\" 1 2"} {
		if _, err := parseDescriptor([]byte(bad), "d.vmdk", 0); !errors.Is(err, image.ErrCorrupt) {
			t.Errorf("%q: %v, want ErrCorrupt", bad, err)
		}
	}
}
