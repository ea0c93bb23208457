package testkit

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A Sample is a small image of one format qemu-img reads, made at test
// time: with qemu-img create where qemu-img writes the format, crafted from
// the format's published header where it only reads it.
type Sample struct {
	// Name tells the sample in test names: "bochs v2", "parallels Ext".
	Name string
	// QemuFormat is the format qemu-img info must report.
	QemuFormat string
	// File is the sample's name (the extension matters to qemu-img for
	// dmg alone, which it tells by name).
	File string
	make func(t testing.TB, path string)
}

// Make writes the sample into dir and returns its path.
func (s Sample) Make(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, s.File)
	s.make(t, p)
	return p
}

// Samples lists one sample (or more) of every format qemu-img 7.2 probes.
func Samples() []Sample {
	create := func(format string, opts ...string) func(testing.TB, string) {
		return func(t testing.TB, p string) {
			QemuImg(t, append(append([]string{"create", "-q", "-f", format}, opts...), p, "1M")...)
		}
	}
	return []Sample{
		{"qcow2", "qcow2", "s.qcow2", create("qcow2")},
		{"qcow v1", "qcow", "s.qcow", create("qcow")},
		{"qed", "qed", "s.qed", create("qed")},
		{"vmdk", "vmdk", "s.vmdk", create("vmdk")},
		{"vpc dynamic", "vpc", "s.vhd", create("vpc", "-o", "subformat=dynamic")},
		{"vhdx", "vhdx", "s.vhdx", create("vhdx")},
		{"vdi", "vdi", "s.vdi", create("vdi")},
		{"parallels", "parallels", "s.hdd", create("parallels")},
		{"parallels Ext", "parallels", "ext.hdd", func(t testing.TB, p string) {
			create("parallels")(t, p)
			patch(t, p, 0, []byte("WithouFreSpacExt"))
		}},
		{"luks", "luks", "s.luks", createLUKS},
		{"bochs v2", "bochs", "s.bochs", func(t testing.TB, p string) { write(t, p, Bochs(0x20000, 1<<20)) }},
		{"bochs v1", "bochs", "v1.bochs", func(t testing.TB, p string) { write(t, p, Bochs(0x10000, 1<<20)) }},
		{"cloop", "cloop", "s.cloop", func(t testing.TB, p string) { write(t, p, Cloop(64<<10)) }},
		{"dmg", "dmg", "s.dmg", func(t testing.TB, p string) { write(t, p, DMG(1<<20)) }},
	}
}

// createLUKS makes a LUKS image with qemu-img. qemu times its PBKDF by
// the thread's CPU clock and gives up ("Unable to get accurate CPU
// usage") when a round measured 0 ms, which a coarse clock on a loaded
// machine does now and then: that failure is tried again.
func createLUKS(t testing.TB, p string) {
	t.Helper()
	Need(t, "qemu-img")
	var out []byte
	var err error
	for range 5 {
		out, err = exec.Command("qemu-img", "create", "-q", "-f", "luks", "--object", "secret,id=sec0,data=test", "-o", "key-secret=sec0,iter-time=10", p, "1M").CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("accurate CPU usage")) {
			break
		}
	}
	if err != nil {
		t.Fatalf("qemu-img create -f luks %s: %v\n%s", p, err, out)
	}
}

// QemuFormat is the format qemu-img info tells for path.
func QemuFormat(t testing.TB, path string) string {
	t.Helper()
	Need(t, "qemu-img")
	cmd := exec.Command("qemu-img", "info", "--output=json", path)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", path, err, errb.String())
	}
	var info struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(out.Bytes(), &info); err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	return info.Format
}

func write(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func patch(t testing.TB, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Bochs is a growing Bochs image (its redolog header, version 0x20000 or
// 0x10000) of size bytes with nothing allocated: every catalog entry is
// 0xffffffff.
func Bochs(version uint32, size uint64) []byte {
	const extent = 4096
	catalog := uint32(size / extent)
	h := make([]byte, 512)
	copy(h, "Bochs Virtual HD Image")
	copy(h[32:], "Redolog")
	copy(h[48:], "Growing")
	le := binary.LittleEndian
	le.PutUint32(h[64:], version)
	le.PutUint32(h[68:], 512) // header size
	le.PutUint32(h[72:], catalog)
	le.PutUint32(h[76:], 512)    // bitmap size
	le.PutUint32(h[80:], extent) // extent size
	if version == 0x10000 {
		le.PutUint64(h[84:], size)
	} else {
		le.PutUint64(h[88:], size) // after a reserved word
	}
	return append(h, bytes.Repeat([]byte{0xff}, int(catalog)*4)...)
}

// Cloop is a cloop V2.0 image of one block of blockSize zeros.
func Cloop(blockSize uint32) []byte {
	b := make([]byte, 128)
	copy(b, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(make([]byte, blockSize))
	w.Close()
	be := binary.BigEndian
	b = be.AppendUint32(b, blockSize)
	b = be.AppendUint32(b, 1) // blocks
	first := uint64(len(b) + 2*8)
	b = be.AppendUint64(b, first)
	b = be.AppendUint64(b, first+uint64(z.Len()))
	return append(b, z.Bytes()...)
}

// DMG is an Apple UDIF disk image of sectors*512 bytes: a resource fork
// with one resource that is not a block map (qemu reads such a disk as
// unmapped) and the 512-byte "koly" trailer at the end.
func DMG(size uint64) []byte {
	be := binary.BigEndian
	var fork []byte
	fork = be.AppendUint32(fork, 16) // offset of the resource data
	fork = append(fork, 0, 0, 0, 0)
	fork = be.AppendUint32(fork, 8) // length of the resource data
	fork = append(fork, 0, 0, 0, 0)
	fork = be.AppendUint32(fork, 4)
	fork = append(fork, "none"...)
	body := make([]byte, 512)
	copy(body, fork)
	k := make([]byte, 512)
	copy(k, "koly")
	be.PutUint32(k[4:], 4)   // version
	be.PutUint32(k[8:], 512) // header size
	be.PutUint64(k[0x28:], 0)
	be.PutUint64(k[0x30:], uint64(len(fork)))
	be.PutUint64(k[0x1ec:], size/512)
	return append(body, k...)
}
