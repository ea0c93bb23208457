package check

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"vmimport/check/internal/guestfs"
	"vmimport/check/internal/initramfs"
	"vmimport/check/internal/part"
	"vmimport/internal/testkit"
)

func TestExtendedPartitions(t *testing.T) {
	for name, disk := range map[string][]byte{"sfdisk": loadSeed(t, "ebr.img.gz"), "hand-made": handMadeEBR()} {
		tab := part.Read(bytes.NewReader(disk), int64(len(disk)))
		var idx []int
		for _, p := range tab.Parts {
			idx = append(idx, p.Index)
		}
		if tab.Kind != "mbr" || !slices.Equal(idx, []int{1, 2, 5, 6}) || len(tab.Problems) != 0 {
			t.Errorf("%s: %s partitions %v, problems %v", name, tab.Kind, idx, tab.Problems)
		}
		if !tab.Parts[2].Logical || tab.Parts[2].Active || !tab.Parts[0].Active {
			t.Errorf("%s: flags %+v", name, tab.Parts)
		}
	}
	// sfdisk's layout: logical 5 at sector 104, 6 at 300.
	disk := loadSeed(t, "ebr.img.gz")
	tab := part.Read(bytes.NewReader(disk), int64(len(disk)))
	if tab.Parts[2].Start != 104*512 || tab.Parts[3].Start != 300*512 || tab.Parts[3].Type != "0x82" || tab.DiskID != 0xdeadbeef {
		t.Errorf("sfdisk layout %+v", tab.Parts)
	}
}

func TestEBRLoop(t *testing.T) {
	d := handMadeEBR()
	// The second EBR (sector 24 = 16+8) names itself as the next one.
	d[24*512+446+16+4] = 0x05
	binary.LittleEndian.PutUint32(d[24*512+446+16+8:], 8)
	binary.LittleEndian.PutUint32(d[24*512+446+16+12:], 8)
	tab := part.Read(bytes.NewReader(d), int64(len(d)))
	if len(tab.Problems) != 1 || len(tab.Parts) != 4 {
		t.Errorf("loop: problems %v, %d partitions", tab.Problems, len(tab.Parts))
	}
}

func TestGPTHead(t *testing.T) {
	disk := loadSeed(t, "gpt-head.img.gz")
	r := &Report{}
	tab := part.Read(bytes.NewReader(disk), int64(len(disk)))
	partitions(r, tab, 8<<20)
	if tab.Kind != "gpt" || len(tab.Parts) != 2 || tab.Parts[0].Type != part.ESPGUID || tab.Parts[1].Label != "root" {
		t.Fatalf("gpt %+v", tab)
	}
	if got := r.Rules(Info); !slices.Equal(got, []string{RuleEFI, RuleGPT}) {
		t.Errorf("rules %v", got)
	}
}

func TestNoTable(t *testing.T) {
	r := &Report{}
	tab := part.Read(bytes.NewReader(make([]byte, 4096)), 4096)
	partitions(r, tab, 4096)
	if tab.Kind != "none" || !r.Has(RulePartTable) {
		t.Errorf("%+v %v", tab, r.Findings)
	}
	tab = part.Read(bytes.NewReader(make([]byte, 100)), 100)
	if len(tab.Problems) != 1 {
		t.Errorf("tiny disk: %+v", tab)
	}
}

func TestUsage(t *testing.T) {
	img := loadSeedPrefix(t, "ext4.img.gz", 2048)
	sb := bytes.Clone(img[1024:2048])
	fi := guestfs.ProbeBytes(img[:2048])
	if fi.Type != "ext4" || fi.UUID != "11111111-2222-3333-4444-555555555555" || fi.Used <= 0 || fi.Used > 98 || fi.Inodes <= 0 {
		t.Fatalf("ext4 %+v", fi)
	}
	// 1 free block and 1 free inode left.
	binary.LittleEndian.PutUint32(sb[0xc:], 1)
	binary.LittleEndian.PutUint32(sb[0x10:], 1)
	withSuper := func(sb []byte) guestfs.Info {
		b := bytes.Clone(img[:2048])
		copy(b[1024:], sb)
		return guestfs.ProbeBytes(b)
	}
	if fi := withSuper(sb); fi.Used < 99 || fi.Inodes < 98 {
		t.Errorf("full ext4 %+v", fi)
	}
	if fi.Dirty != "" {
		t.Errorf("clean ext4 is dirty: %s", fi.Dirty)
	}
	binary.LittleEndian.PutUint32(sb[0x60:], binary.LittleEndian.Uint32(sb[0x60:])|0x4) // needs_recovery
	if withSuper(sb).Dirty == "" {
		t.Errorf("needs_recovery not seen")
	}
	x := loadSeedPrefix(t, "xfs.img.gz", 512)
	fi = guestfs.ProbeBytes(x[:512])
	if fi.Type != "xfs" || fi.UUID != "11111111-2222-3333-4444-555555555555" || fi.Used <= 0 || fi.Used > 98 {
		t.Fatalf("xfs %+v", fi)
	}
	xs := bytes.Clone(x[:512])
	binary.BigEndian.PutUint64(xs[144:], 10) // fdblocks
	if fi := guestfs.ProbeBytes(xs); fi.Used < 99 {
		t.Errorf("full xfs %+v", fi)
	}
	if guestfs.ProbeBytes(loadSeed(t, "ext2.img.gz")[:2048]).Type != "ext2" {
		t.Errorf("ext2 not told apart")
	}
}

func TestInitramfs(t *testing.T) {
	for _, c := range []string{"gzip", "zstd"} {
		img := makeInitramfs(t, c, true)
		names, err := initramfs.Names(bytes.NewReader([]byte(img)), int64(len(img)))
		if err != nil || !hasModuleName(names, "virtio_blk") || !slices.Contains(names, "kernel/x86/microcode/GenuineIntel.bin") || !slices.Contains(names, "init") {
			t.Errorf("%s: %v %v", c, names, err)
		}
	}
	xz := string(testkit.Cpio(map[string]string{"a": "b"})) + "\xfd7zXZ\x00rest"
	if _, err := initramfs.Names(bytes.NewReader([]byte(xz)), int64(len(xz))); !errors.Is(err, initramfs.ErrCompression) || !strings.Contains(err.Error(), "xz") {
		t.Errorf("xz: %v", err)
	}
}

type memDisk struct{ *bytes.Reader }

func (m memDisk) Size() int64 { return m.Reader.Size() }

func TestFormatRules(t *testing.T) {
	iso := make([]byte, 64<<10)
	copy(iso[0x8001:], "CD001")
	r, err := Run(context.Background(), memDisk{bytes.NewReader(iso)}, Options{Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Rules(Warning); !slices.Equal(got, []string{RuleFormat, RulePartTable}) {
		t.Errorf("iso: %v", got)
	}
	r, err = Run(context.Background(), memDisk{bytes.NewReader(handMadeEBR())}, Options{Format: "vdi"})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Has(RuleFormat) {
		t.Errorf("vdi: %v", r.Findings)
	}
	for _, f := range r.Findings {
		if f.Rule == RuleFormat && f.Severity != Info {
			t.Errorf("vdi: %+v", f)
		}
	}
}

func TestWholeDiskFS(t *testing.T) {
	t.Parallel()
	disk := testkit.MakeRootDisk(t, t.TempDir(), testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4", cleanRoot("ext4"))}})
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), memDisk{bytes.NewReader(b[1<<20 : 49<<20])}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Rules(Warning); !slices.Equal(got, []string{RulePartTable}) || r.OS.Platform != "CentOS" || r.PartitionTable != "none" {
		t.Errorf("rules %v, OS %+v", got, r.OS)
	}
}
