package vhd_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/vhd"
)

// TestSizeRule checks the creator-dependent virtual size against qemu-img
// for the creators both qemu 7.2 and current qemu agree on.
func TestSizeRule(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(raw, make([]byte, 5<<20+12345), 0o644); err != nil {
		t.Fatal(err)
	}
	v := testkit.Convert(t, raw, filepath.Join(dir, "x.vhd"), "vpc", "-o", "subformat=fixed,force_size=on")
	b, err := os.ReadFile(v)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	for _, app := range []string{"vpc ", "qemu", "qem2", "win ", "d2v ", "tap\x00", "CTXS"} {
		f := b[len(b)-512:]
		copy(f[28:], app)
		be.PutUint32(f[64:], vhd.Checksum(f, 64))
		if err := os.WriteFile(v, b, 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := reader.Open(v, reader.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := im.Size(), qemuSize(t, v); got != want {
			t.Errorf("creator %q: size %d, qemu-img says %d", app, got, want)
		}
		im.Close()
	}
	// Creators qemu 7.2 did not know (VirtualBox, Azure): qemu 7.2 sizes
	// them by geometry, qemu 10 and we by the current size, which never
	// cuts off the end of the disk.
	for _, app := range []string{"vbox", "wa\x00\x00"} {
		f := b[len(b)-512:]
		copy(f[28:], app)
		be.PutUint32(f[64:], vhd.Checksum(f, 64))
		if err := os.WriteFile(v, b, 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := reader.Open(v, reader.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := im.Size(), int64(be.Uint64(f[48:])); got != want {
			t.Errorf("creator %q: size %d, want the current size %d", app, got, want)
		}
		im.Close()
	}
}

// quickCheck compares the whole image with qemu-img's RAW in large reads
// and checks that every zero extent is zero there: the bytes of the
// conformance suite without its thousands of small reads.
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
			t.Fatalf("bytes differ from qemu-img's in [%d, +%d)", off, n)
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
