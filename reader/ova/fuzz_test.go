package ova_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/ova"
)

var update = flag.Bool("update", false, "regenerate testdata/small.ova")

// TestFixture rebuilds testdata/small.ova with -update (from the VMDK
// fixture of reader/vmdk) and checks that it opens, reads and verifies.
//
//	go test ./reader/ova -run TestFixture -update
func TestFixture(t *testing.T) {
	p := filepath.Join("testdata", "small.ova")
	if *update {
		dir := t.TempDir()
		disk := filepath.Join("..", "vmdk", "testdata", "stream-header-64k.vmdk")
		ovf := filepath.Join(dir, "small.ovf")
		b, err := os.ReadFile(disk)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "small-disk1.vmdk"), b, 0o644)
		os.WriteFile(ovf, []byte(ovfText([][3]string{{"vmdisk1", "small-disk1.vmdk", "198144"}})), 0o644)
		mf := filepath.Join(dir, "small.mf")
		os.WriteFile(mf, []byte("SHA256(small.ovf)= "+digest(t, "SHA256", ovf)+"\nSHA1(small-disk1.vmdk)= "+digest(t, "SHA1", disk)+"\n"), 0o644)
		writeTar(t, p, [][2]string{{"small.ovf", ovf}, {"small.mf", mf}, {"small-disk1.vmdk", filepath.Join(dir, "small-disk1.vmdk")}})
	}
	im, err := reader.Open(p, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	buf := make([]byte, im.Size())
	if _, err := im.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := image.Verify(im); err != nil {
		t.Fatal(err)
	}
}

// FuzzOVA opens whole archives: tar walk, OVF, manifest, the disk inside.
func FuzzOVA(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "small.ova"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		im, err := ova.Open(image.Source{R: bytes.NewReader(b), Size: int64(len(b)), Path: "fuzz.ova", Fd: -1}, nil, reader.Detect)
		if err != nil {
			return
		}
		defer im.Close()
		_ = im.Info()
		p := make([]byte, min(im.Size(), 1<<20))
		im.ReadAt(p, 0)
		_ = im.Verify()
	})
}
