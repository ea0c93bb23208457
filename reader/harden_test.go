package reader

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader/image"
)

// TestNeverRAW: a file that carries a format's signature but is cut short
// or damaged is "a truncated or corrupt X", never read as RAW (which would
// convert the container's own bytes as if they were a disk).
func TestNeverRAW(t *testing.T) {
	dir := t.TempDir()
	mk := func(format string, opts ...string) []byte {
		p := filepath.Join(dir, "src."+format)
		testkit.QemuImg(t, append(append([]string{"create", "-q", "-f", format}, opts...), p, "4M")...)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dynVHD := mk("vpc", "-o", "subformat=dynamic")
	fixedVHD := mk("vpc", "-o", "subformat=fixed")
	vdi := mk("vdi")
	qcow2 := mk("qcow2")
	vmdk := mk("vmdk")
	vhdx := mk("vhdx")
	ova, err := os.ReadFile("ova/testdata/small.ova")
	if err != nil {
		t.Fatal(err)
	}
	damagedFooter := append([]byte{}, fixedVHD...)
	damagedFooter[len(damagedFooter)-512+48] ^= 1 // current size: the checksum no longer matches
	cases := []struct {
		name   string
		b      []byte
		format string // named in the error
	}{
		{"dynamic VHD, first 511 bytes", dynVHD[:511], "vhd"},
		{"fixed VHD, footer damaged", damagedFooter, "vhd"},
		{"VDI, first 60 bytes", vdi[:60], "VDI"},
		{"VDI, first 400 bytes", vdi[:400], "vdi"},
		{"OVA, first 100 bytes", ova[:100], "ova"},
		{"OVA, first 300 bytes", ova[:300], "ova"},
		{"QCOW2, first 5 bytes", qcow2[:5], "qcow2"},
		{"QCOW2, first 70 bytes", qcow2[:70], "qcow2"},
		{"VMDK, first 100 bytes", vmdk[:100], "vmdk"},
		{"VHDX, first 100 KiB", vhdx[:100<<10], "vhdx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cut.img")
			if err := os.WriteFile(p, c.b, 0o644); err != nil {
				t.Fatal(err)
			}
			im, err := Open(p, Options{})
			if err == nil {
				f := im.Info().Format
				im.Close()
				t.Fatalf("opened as %s; want a truncated or corrupt %s", f, c.format)
			}
			if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.format)) || !strings.Contains(err.Error(), "cut.img") {
				t.Errorf("err = %v; want ErrCorrupt naming the file and %s", err, c.format)
			}
		})
	}
	// A fixed VHD missing its last byte still holds a whole footer but for
	// one reserved zero byte: old Virtual PC wrote such 511-byte footers.
	// It is a VHD (never RAW carrying a broken footer).
	t.Run("fixed VHD missing its last byte", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "cut.vhd")
		os.WriteFile(p, fixedVHD[:len(fixedVHD)-1], 0o644)
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if f := im.Info().Format; f != "vhd" || im.Size() != int64(len(fixedVHD)-512) {
			t.Fatalf("opened as %s of %d bytes", f, im.Size())
		}
	})
	// Without any signature a file is RAW.
	t.Run("no signature", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "plain.img")
		os.WriteFile(p, make([]byte, 100), 0o644)
		im, err := Open(p, Options{})
		if err != nil || im.Info().Format != "raw" {
			t.Fatalf("%v, %v", im, err)
		}
		im.Close()
	})
}

// chain makes n QCOW2 files, each the backing file of the next, each level
// writing its own 4 KiB somewhere, and returns their paths, base first.
func chain(t *testing.T, dir string, n int) []string {
	t.Helper()
	testkit.Need(t, "qemu-io")
	var paths []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("c%02d.qcow2", i))
		args := []string{"create", "-q", "-f", "qcow2", "-o", "cluster_size=4k"}
		if i > 0 {
			args = append(args, "-b", filepath.Base(paths[i-1]), "-F", "qcow2")
		}
		testkit.QemuImg(t, append(args, p, "1M")...)
		testkit.Run(t, "qemu-io", "-c", fmt.Sprintf("write -P %d %d 4k", i+1, (i*12288)%(1<<20)), p)
		paths = append(paths, p)
	}
	return paths
}

// TestDeepChain reads a chain of 24 files (more than the 16 allowed
// before) with the same bytes as qemu-img.
func TestDeepChain(t *testing.T) {
	paths := chain(t, t.TempDir(), 24)
	top := paths[len(paths)-1]
	im, err := Open(top, Options{AllowBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if n := len(image.Files(im)); n != 24 {
		t.Errorf("Files() = %d files, want 24", n)
	}
	want, err := os.ReadFile(testkit.Convert(t, top, filepath.Join(t.TempDir(), "want.raw"), "raw"))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, im.Size())
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("the chain reads differently from qemu-img")
	}
}

// TestChainLoop: a loop is one short line naming the first file, the one
// that names the repeat, and the repeat.
func TestChainLoop(t *testing.T) {
	dir := t.TempDir()
	paths := chain(t, dir, 6)
	// c00 now names c04 as its backing file: c05 -> c04 -> ... -> c00 -> c04.
	testkit.QemuImg(t, "rebase", "-u", "-f", "qcow2", "-b", "c04.qcow2", "-F", "qcow2", paths[0])
	_, err := Open(paths[5], Options{AllowBacking: true})
	if err == nil {
		t.Fatal("opened a chain that loops")
	}
	msg := err.Error()
	if !errors.Is(err, image.ErrCorrupt) || len(msg) > 300 || strings.Contains(msg, "\n") ||
		!strings.Contains(msg, "c05.qcow2: backing chain loops") || !strings.Contains(msg, "c00.qcow2 names") || !strings.Contains(msg, "c04.qcow2, which is file 2 of the chain") {
		t.Fatalf("err (%d bytes) = %q", len(msg), msg)
	}
	// A file that names itself.
	testkit.QemuImg(t, "rebase", "-u", "-f", "qcow2", "-b", "c02.qcow2", "-F", "qcow2", paths[2])
	if _, err := Open(paths[2], Options{AllowBacking: true}); err == nil || !strings.Contains(err.Error(), "c02.qcow2 names") {
		t.Fatalf("self-loop: %v", err)
	}
}

// TestChainFileLimit runs a child with a low open-file limit: a chain
// longer than it allows ends with an error that says so.
func TestChainFileLimit(t *testing.T) {
	if top := os.Getenv("CHAIN_LIMIT_TOP"); top != "" {
		if err := testkit.SetFileLimit(24); err != nil {
			t.Fatal(err)
		}
		_, err := Open(top, Options{AllowBacking: true})
		fmt.Printf("RESULT %v\n", err)
		return
	}
	paths := chain(t, t.TempDir(), 30)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestChainFileLimit$")
	cmd.Env = append(os.Environ(), "CHAIN_LIMIT_TOP="+paths[29])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, res, _ := strings.Cut(string(out), "RESULT ")
	res, _, _ = strings.Cut(res, "\n")
	if !strings.Contains(res, "c29.qcow2: backing chain of more than") || !strings.Contains(res, "ulimit -n 24") || len(res) > 300 {
		t.Fatalf("child's error: %q", res)
	}
}

// TestSameFile: an output that is a file the image reads (the image, a
// backing file, an extent), reached through a symbolic or hard link, is
// refused; any other path is not.
func TestSameFile(t *testing.T) {
	dir := t.TempDir()
	paths := chain(t, dir, 3)
	flatDir := t.TempDir()
	flat := filepath.Join(flatDir, "d.vmdk")
	testkit.QemuImg(t, "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat, "1M")
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(paths[2], filepath.Join(dir, "top-link")))
	must(os.Link(paths[0], filepath.Join(dir, "base-hardlink")))
	must(os.Symlink(filepath.Join(flatDir, "d-flat.vmdk"), filepath.Join(dir, "extent-link")))
	top, err := Open(paths[2], Options{AllowBacking: true})
	must(err)
	defer top.Close()
	vm, err := Open(flat, Options{})
	must(err)
	defer vm.Close()
	for _, c := range []struct {
		im   Image
		out  string
		same bool
	}{
		{top, paths[2], true},
		{top, paths[1], true},
		{top, filepath.Join(dir, "top-link"), true},
		{top, filepath.Join(dir, "base-hardlink"), true},
		{top, filepath.Join(dir, "new.raw"), false},
		{top, flat, false},
		{vm, flat, true},
		{vm, filepath.Join(dir, "extent-link"), true},
		{vm, paths[0], false},
	} {
		err := image.SameFile(c.im, c.out)
		if c.same != (err != nil) || err != nil && !errors.Is(err, image.ErrSameFile) {
			t.Errorf("SameFile(%s, %s) = %v; want same=%v", c.im.Info().Path, c.out, err, c.same)
		}
	}
}
