package bench

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
)

func TestGenerateIsDeterministic(t *testing.T) {
	testkit.Need(t, "mkfs.ext4", "debugfs")
	dir := t.TempDir()
	o := GenOptions{Size: 96 << 20, Fill: 0.5, Seed: 7}
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	if err := Generate(a, o); err != nil {
		t.Fatal(err)
	}
	if err := Generate(b, o); err != nil {
		t.Fatal(err)
	}
	if testkit.FileSHA256(t, a) != testkit.FileSHA256(t, b) {
		t.Fatal("the same options gave different disks")
	}
	o.Seed = 8
	c := filepath.Join(dir, "c.raw")
	if err := Generate(c, o); err != nil {
		t.Fatal(err)
	}
	if testkit.FileSHA256(t, a) == testkit.FileSHA256(t, c) {
		t.Fatal("another seed gave the same disk")
	}
}

func TestGenerateShape(t *testing.T) {
	testkit.Need(t, "mkfs.ext4", "debugfs")
	dir := t.TempDir()
	for _, fill := range []float64{0.1, 0.5, 0.9} {
		p := filepath.Join(dir, "d.raw")
		if err := Generate(p, GenOptions{Size: 128 << 20, Fill: fill, Seed: 1}); err != nil {
			t.Fatal(err)
		}
		disk, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(disk) != 128<<20 || disk[510] != 0x55 || disk[511] != 0xaa || disk[446] != 0x80 || disk[450] != 0x83 {
			t.Fatalf("fill %.1f: no MBR with an active Linux partition", fill)
		}
		p1 := int64(binary.LittleEndian.Uint32(disk[454:])) * 512
		if magic := binary.LittleEndian.Uint16(disk[p1+1024+0x38:]); magic != 0xef53 {
			t.Fatalf("fill %.1f: no ext4 superblock in partition 1 (magic %#x)", fill, magic)
		}
		data := 0
		zero := make([]byte, 1<<20)
		for off := 0; off < len(disk); off += 1 << 20 {
			if !bytes.Equal(disk[off:off+1<<20], zero) {
				data++
			}
		}
		got := float64(data) / 128
		if got < fill*0.6 || got > fill*1.3+0.05 {
			t.Errorf("fill %.1f: %.2f of the MiBs hold data", fill, got)
		}
		os.Remove(p)
	}
}
