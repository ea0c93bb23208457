package qcow2

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/stream"
	"vmimport/writer"
)

// TestRefcountOverflow packs more tiny compressed clusters than a 16-bit
// refcount can count into 2 MiB host clusters: the encoder must move on to
// a new host cluster at 65535 references, as qemu does. Real compressors do
// not get a 2 MiB cluster below ~70 bytes (32 would be needed), so the
// blocks are fed with made-up 16-byte "compressed" forms; qemu-img check
// does not inflate them.
func TestRefcountOverflow(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	testkit.Need(t, "qemu-img")
	const cs = 2 << 20
	const n = 70000
	plain := make([]byte, cs)
	comp := bytes.Repeat([]byte{0xaa}, 16)
	dst := filepath.Join(t.TempDir(), "o.qcow2")
	tg, err := writer.CreateFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Abort(context.Background())
	e, err := NewEncoder(tg, Options{ClusterSize: cs, Compression: CompressZstd, VirtualSize: n * cs})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	info := &blockInfo{kinds: []byte{kindCompressed}, start: []int32{0, int32(len(comp))}}
	for i := range int64(n) {
		info.comp = comp
		b := &stream.Block{Off: i * cs, Len: cs, Data: plain, Aux: info}
		if err := e.WriteBlock(ctx, b); err != nil {
			t.Fatal(err)
		}
		info = &blockInfo{kinds: []byte{kindCompressed}, start: []int32{0, int32(len(comp))}}
	}
	if err := e.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	out := testkit.QemuImg(t, "check", dst)
	if !strings.Contains(out, "No errors were found") || strings.Contains(out, "leak") {
		t.Fatalf("qemu-img check:\n%s", out)
	}
	// Host cluster 1 is full of compressed clusters: its refcount is the
	// maximum, and the next ones went on to cluster 2.
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 64)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	rt := make([]byte, 8)
	if _, err := f.ReadAt(rt, int64(binary.BigEndian.Uint64(hdr[48:]))); err != nil {
		t.Fatal(err)
	}
	rc := make([]byte, 6)
	if _, err := f.ReadAt(rc, int64(binary.BigEndian.Uint64(rt))); err != nil {
		t.Fatal(err)
	}
	if c1 := binary.BigEndian.Uint16(rc[2:]); c1 != maxRefcount {
		t.Errorf("refcount of host cluster 1 = %d, want %d", c1, maxRefcount)
	}
}

// TestEmptyDisk: a disk of 0 bytes still makes a valid image.
func TestEmptyDisk(t *testing.T) {
	testkit.Need(t, "qemu-img")
	for _, compat := range []string{Compat11, Compat010} {
		dst := filepath.Join(t.TempDir(), "e.qcow2")
		tg, err := writer.CreateFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		e, err := NewEncoder(tg, Options{Compat: compat})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Finish(context.Background()); err != nil {
			t.Fatal(err)
		}
		out := testkit.QemuImg(t, "check", dst)
		if !strings.Contains(out, "No errors were found") || strings.Contains(out, "leak") {
			t.Fatalf("qemu-img check:\n%s", out)
		}
		if info := testkit.QemuImg(t, "info", dst); !strings.Contains(info, "virtual size: 0 B") {
			t.Fatalf("qemu-img info:\n%s", info)
		}
	}
}
