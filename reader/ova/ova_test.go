package ova_test

import (
	"archive/tar"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/ova"
	"vmimport/reader/readertest"
)

// ovfText lists the disks in the order given: (id, file, capacity bytes).
func ovfText(disks [][3]string) string {
	var refs, ds strings.Builder
	for i, d := range disks {
		fmt.Fprintf(&refs, "    <File ovf:id=\"file%d\" ovf:href=\"%s\"/>\n", i, d[1])
		fmt.Fprintf(&ds, "    <Disk ovf:diskId=\"%s\" ovf:fileRef=\"file%d\" ovf:capacity=\"%s\" ovf:capacityAllocationUnits=\"byte\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n", d[0], i, d[2])
	}
	return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
` + refs.String() + `  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
` + ds.String() + `  </DiskSection>
  <VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name></VirtualSystem>
</Envelope>
`
}

// writeTar writes the named files, in order, into an OVA.
func writeTar(t testing.TB, dst string, files [][2]string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, nf := range files {
		name, src := nf[0], nf[1]
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func digest(t testing.TB, algo, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if algo == "SHA1" {
		s := sha1.Sum(b)
		return hex.EncodeToString(s[:])
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type fixture struct {
	dir, raw1, raw2, vmdk1, vmdk2, ovf string
}

func build(t *testing.T) fixture {
	testkit.Need(t, "qemu-img", "sfdisk", "mkfs.ext4")
	dir := t.TempDir()
	fx := fixture{dir: dir}
	fx.raw1 = testkit.MakeDisk(t, dir, testkit.DiskOptions{SizeMiB: 32, DataMiB: 6, Tail: true})
	fx.raw2 = filepath.Join(dir, "data.raw")
	b := make([]byte, 3<<20+512*3)
	for i := range b {
		b[i] = byte(i * 31 >> 9)
	}
	if err := os.WriteFile(fx.raw2, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fx.vmdk1 = testkit.Convert(t, fx.raw1, filepath.Join(dir, "vm-disk1.vmdk"), "vmdk", "-o", "subformat=streamOptimized")
	fx.vmdk2 = testkit.Convert(t, fx.raw2, filepath.Join(dir, "vm-disk2.vmdk"), "vmdk", "-o", "subformat=streamOptimized")
	fx.ovf = filepath.Join(dir, "vm.ovf")
	text := ovfText([][3]string{{"vmdisk1", "vm-disk1.vmdk", "33554432"}, {"vmdisk2", "vm-disk2.vmdk", fmt.Sprint(len(b))}})
	if err := os.WriteFile(fx.ovf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return fx
}

func (fx fixture) ova(t *testing.T, name, algo string, badDisk bool) string {
	mf := filepath.Join(fx.dir, name+".mf")
	d1 := digest(t, algo, fx.vmdk1)
	if badDisk {
		d1 = strings.Repeat("0", len(d1))
	}
	text := fmt.Sprintf("%s(vm.ovf)= %s\n%s(vm-disk1.vmdk)= %s\n%s(vm-disk2.vmdk)= %s\n",
		algo, digest(t, algo, fx.ovf), algo, d1, algo, digest(t, algo, fx.vmdk2))
	if err := os.WriteFile(mf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(fx.dir, name+".ova")
	writeTar(t, p, [][2]string{{"vm.ovf", fx.ovf}, {"vm.mf", mf}, {"vm-disk1.vmdk", fx.vmdk1}, {"vm-disk2.vmdk", fx.vmdk2}})
	return p
}

func TestOVA(t *testing.T) {
	fx := build(t)
	for _, algo := range []string{"SHA256", "SHA1"} {
		t.Run(algo, func(t *testing.T) {
			p := fx.ova(t, "good-"+algo, algo, false)
			im, err := reader.Open(p, reader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			info := im.Info()
			if info.Format != "ova" || !strings.Contains(info.Subformat, "streamOptimized") {
				t.Errorf("info %+v", info)
			}
			var listed int
			for _, f := range info.Fields {
				if strings.HasPrefix(f.Name, "disk ") {
					listed++
				}
			}
			if listed != 2 || !strings.Contains(info.Fields[0].Value, "33554432") || !strings.Contains(info.Fields[0].Value, "[selected]") {
				t.Errorf("disks in Info: %+v", info.Fields)
			}
			readertest.CheckFast(t, im, fx.raw1)
			if err := image.Verify(im); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
	t.Run("disk 1", func(t *testing.T) {
		p := fx.ova(t, "good-SHA256", "SHA256", false)
		im, err := reader.Open(p, reader.Options{Disk: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		readertest.CheckFast(t, im, fx.raw2)
		if err := image.Verify(im); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if _, err := reader.Open(p, reader.Options{Disk: 2}); err == nil || !strings.Contains(err.Error(), "lists 2 disk") {
			t.Errorf("disk 2 of 2: %v", err)
		}
	})
	t.Run("bad digest", func(t *testing.T) {
		p := fx.ova(t, "bad", "SHA256", true)
		im, err := reader.Open(p, reader.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if _, err := io.Copy(io.Discard, io.NewSectionReader(im, 0, im.Size())); err != nil {
			t.Fatal(err)
		}
		err = image.Verify(im)
		if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), "manifest says") {
			t.Fatalf("Verify = %v, want a digest mismatch", err)
		}
		t.Log(err)
	})
	t.Run("bad OVF digest", func(t *testing.T) {
		mf := filepath.Join(fx.dir, "badovf.mf")
		os.WriteFile(mf, []byte("SHA256(vm.ovf)= "+strings.Repeat("ab", 32)+"\n"), 0o644)
		p := filepath.Join(fx.dir, "badovf.ova")
		writeTar(t, p, [][2]string{{"vm.ovf", fx.ovf}, {"vm.mf", mf}, {"vm-disk1.vmdk", fx.vmdk1}})
		_, err := reader.Open(p, reader.Options{})
		if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("Open = %v", err)
		}
	})
	t.Run("missing disk", func(t *testing.T) {
		p := filepath.Join(fx.dir, "missing.ova")
		writeTar(t, p, [][2]string{{"vm.ovf", fx.ovf}, {"vm-disk2.vmdk", fx.vmdk2}})
		_, err := reader.Open(p, reader.Options{})
		if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), "does not hold it") {
			t.Fatalf("Open = %v", err)
		}
		t.Log(err)
		// The other disk is still there.
		im, err := reader.Open(p, reader.Options{Disk: 1})
		if err != nil {
			t.Fatal(err)
		}
		im.Close()
	})
	t.Run("close before verify", func(t *testing.T) {
		p := fx.ova(t, "good-SHA256", "SHA256", false)
		im, err := reader.Open(p, reader.Options{})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		im.ReadAt(buf, 0)
		im.Close()
	})
}

func TestOpenDirect(t *testing.T) {
	// ova.Open without package reader: the detector is a parameter.
	text := ovfText([][3]string{{"d", "d.img", "1048576"}})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x.ovf"), []byte(text), 0o644)
	os.WriteFile(filepath.Join(dir, "d.img"), make([]byte, 1<<20), 0o644)
	p := filepath.Join(dir, "x.ova")
	writeTar(t, p, [][2]string{{"x.ovf", filepath.Join(dir, "x.ovf")}, {"d.img", filepath.Join(dir, "d.img")}})
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	im, err := ova.Open(image.Source{R: f, Size: fi.Size(), Path: p, Fd: -1}, nil, reader.Detect)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.Size() != 1<<20 || len(im.Disks()) != 1 {
		t.Errorf("size %d, disks %+v", im.Size(), im.Disks())
	}
	if err := im.Verify(); err != nil {
		t.Errorf("no manifest: Verify = %v", err)
	}
}
