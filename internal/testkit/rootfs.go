package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// FSPart is one partition of a test disk built by MakeRootDisk.
type FSPart struct {
	SizeMiB int64
	// Type is the sfdisk type: "83", "ef", "8e", ... for MBR disks; "L",
	// "U" (EFI system), "S" (swap) or a GUID for GPT disks. Default: "83"
	// or "L".
	Type     string
	Bootable bool
	// FS is what goes in: "ext4", "ext3", "ext2", "xfs", "vfat", "swap",
	// or the bare magic bytes of "lvm" (an LVM2 label), "luks" (a LUKS1
	// header), "btrfs" (a superblock magic), "ntfs" (a boot sector); ""
	// leaves it zero.
	FS    string
	UUID  string
	Label string
	// Files is the tree of an ext or xfs file system: path -> content. A
	// content starting with "->" makes a symlink to the rest; a path ending
	// in "/" an empty directory.
	Files map[string]string
	// MkfsArgs are extra options for mke2fs or mkfs.xfs ("-b", "4096",
	// "-m", "crc=0", ...).
	MkfsArgs []string
	// Image is a file system image made beforehand (MakeNTFS), copied
	// in instead of FS (it is removed afterwards).
	Image string
}

// RootDiskOptions shape a disk built by MakeRootDisk.
type RootDiskOptions struct {
	// SizeMiB is the whole disk (default: the partitions + 2 MiB).
	SizeMiB int64
	// Label is "dos" (default) or "gpt".
	Label string
	Parts []FSPart
	// BootCode writes 440 bytes of fake boot code into the MBR.
	BootCode bool
}

// MakeRootDisk builds a sparse RAW disk image: a partition table made by
// sfdisk, partitions from 1 MiB on, one after the other, each holding the
// file system built by the real mkfs tool from its Files (mkfs.ext4 -d,
// mkfs.xfs -p protofile). It needs no root.
func MakeRootDisk(t testing.TB, dir string, o RootDiskOptions) string {
	t.Helper()
	Need(t, "sfdisk")
	if o.Label == "" {
		o.Label = "dos"
	}
	total := int64(1)
	for _, p := range o.Parts {
		total += p.SizeMiB
	}
	if o.SizeMiB == 0 {
		o.SizeMiB = total + 1
	}
	disk := filepath.Join(dir, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(o.SizeMiB << 20); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	fmt.Fprintf(&script, "label: %s\n", o.Label)
	if o.Label == "dos" {
		script.WriteString("label-id: 0x12345678\n")
	}
	start := int64(1)
	for i, p := range o.Parts {
		img := p.Image
		if img == "" {
			img = makeFS(t, filepath.Join(dir, fmt.Sprintf("part%d", i+1)), p)
		}
		if img != "" {
			copySparse(t, f, start<<20, img)
			os.Remove(img)
		}
		typ := p.Type
		if typ == "" {
			typ = map[string]string{"dos": "83", "gpt": "L"}[o.Label]
		}
		fmt.Fprintf(&script, "start=%d, size=%d, type=%s", start<<11, p.SizeMiB<<11, typ)
		if p.Bootable {
			script.WriteString(", bootable")
		}
		script.WriteString("\n")
		start += p.SizeMiB
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s\n%s", err, out, script.String())
	}
	if o.BootCode {
		code := make([]byte, 440)
		for i := range code {
			code[i] = byte(0x90 + i%7)
		}
		code[0], code[1] = 0xeb, 0x63 // jmp, as GRUB's boot.img starts
		if _, err := f.WriteAt(code, 0); err != nil {
			t.Fatal(err)
		}
	}
	return disk
}

// makeFS builds one partition's content into a file and returns its name
// ("" for an empty partition).
func makeFS(t testing.TB, base string, p FSPart) string {
	t.Helper()
	img := base + ".img"
	size := p.SizeMiB << 20
	create := func() *os.File {
		f, err := os.Create(img)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		return f
	}
	magic := func(off int64, b string) string {
		f := create()
		defer f.Close()
		if _, err := f.WriteAt([]byte(b), off); err != nil {
			t.Fatal(err)
		}
		return img
	}
	switch p.FS {
	case "":
		return ""
	case "lvm":
		// The label header in sector 1: id, sector, crc, offset, type.
		return magic(512, "LABELONE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20\x00\x00\x00LVM2 001")
	case "luks":
		return magic(0, "LUKS\xba\xbe\x00\x01aes\x00")
	case "btrfs":
		return magic(0x10040, "_BHRfS_M")
	case "ntfs":
		// An NTFS boot sector: OEM id, serial number, signature.
		f := create()
		defer f.Close()
		bs := make([]byte, 512)
		copy(bs, "\xeb\x52\x90NTFS    ")
		copy(bs[0x48:], "\x78\x56\x34\x12\xef\xcd\xab\x90")
		bs[510], bs[511] = 0x55, 0xaa
		if _, err := f.WriteAt(bs, 0); err != nil {
			t.Fatal(err)
		}
		return img
	case "ext2", "ext3", "ext4":
		Need(t, "mkfs."+p.FS)
		tree := writeTree(t, base+".tree", p.Files)
		args := []string{"-q", "-F", "-t", p.FS, "-E", "root_owner=0:0,lazy_itable_init=0", "-d", tree}
		if p.UUID != "" {
			args = append(args, "-U", p.UUID)
		}
		if p.Label != "" {
			args = append(args, "-L", p.Label)
		}
		args = append(args, p.MkfsArgs...)
		Run(t, "mke2fs", append(args, img, fmt.Sprintf("%dM", p.SizeMiB))...)
		os.RemoveAll(tree)
		return img
	case "xfs":
		Need(t, "mkfs.xfs")
		tree := writeTree(t, base+".tree", p.Files)
		proto := base + ".proto"
		writeProto(t, proto, tree)
		create().Close()
		args := []string{"-q", "-f", "-p", proto}
		if p.UUID != "" {
			args = append(args, "-m", "uuid="+p.UUID)
		}
		if p.Label != "" {
			args = append(args, "-L", p.Label)
		}
		args = append(args, p.MkfsArgs...)
		cmd := exec.Command("mkfs.xfs", append(args, img)...)
		// Small test file systems: xfsprogs refuses under 300 MiB
		// unless it runs under its test suite.
		cmd.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mkfs.xfs: %v\n%s", err, out)
		}
		os.RemoveAll(tree)
		os.Remove(proto)
		return img
	case "vfat":
		Need(t, "mkfs.vfat")
		create().Close()
		args := []string{}
		if p.UUID != "" {
			args = append(args, "-i", strings.ReplaceAll(p.UUID, "-", ""))
		}
		if p.Label != "" {
			args = append(args, "-n", p.Label)
		}
		Run(t, "mkfs.vfat", append(args, img)...)
		return img
	case "swap":
		Need(t, "mkswap")
		create().Close()
		args := []string{}
		if p.UUID != "" {
			args = append(args, "-U", p.UUID)
		}
		if p.Label != "" {
			args = append(args, "-L", p.Label)
		}
		Run(t, "mkswap", append(args, img)...)
		return img
	}
	t.Fatalf("testkit: unknown file system %q", p.FS)
	return ""
}

// writeTree writes files into a fresh folder.
func writeTree(t testing.TB, dir string, files map[string]string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(name, "/")))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeProto writes an xfs protofile describing the tree under dir.
func writeProto(t testing.TB, proto, dir string) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	var walk func(d, indent string)
	walk = func(d, indent string) {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		for _, n := range names {
			p := filepath.Join(d, n)
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case fi.Mode()&os.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s%s l--777 0 0 %s\n", indent, n, target)
			case fi.IsDir():
				fmt.Fprintf(&b, "%s%s d--755 0 0\n", indent, n)
				walk(p, indent+" ")
				fmt.Fprintf(&b, "%s$\n", indent+" ")
			default:
				fmt.Fprintf(&b, "%s%s ---644 0 0 %s\n", indent, n, p)
			}
		}
	}
	walk(dir, " ")
	b.WriteString("$\n")
	if err := os.WriteFile(proto, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// copySparse copies a file into f at off, leaving zero blocks as holes.
func copySparse(t testing.TB, f *os.File, off int64, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for pos := int64(0); ; {
		// Skip holes where the system tells them (SEEK_DATA, 3): a 40
		// GiB sparse file system is copied in a moment.
		if next, err := in.Seek(pos, 3); err == nil && next > pos {
			pos = next &^ (int64(len(buf)) - 1)
		} else if errors.Is(err, syscall.ENXIO) {
			break // no data after pos
		}
		n, err := in.ReadAt(buf, pos)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := f.WriteAt(buf[:n], off+pos); werr != nil {
				t.Fatal(werr)
			}
		}
		pos += int64(n)
		if err != nil {
			break
		}
	}
}

// ELF64 is the start of an x86_64 ELF program; ELF32 of an i386 one.
var (
	ELF64 = "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x3e\x00" + strings.Repeat("\x00", 44)
	ELF32 = "\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x03\x00" + strings.Repeat("\x00", 32)
)

// LinuxRoot is a CentOS 7 root file system tree for an fstype file system
// with the given UUID that breaks none of the cloud's import rules: fstab by
// UUID, virtio drivers, sshd enabled, DHCP, the cloud's agent, SELinux
// off, a 64-bit /bin/sh.
func LinuxRoot(fstype, uuid string) map[string]string {
	return map[string]string{
		"etc/os-release": "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nVERSION_ID=\"7\"\n",
		"etc/fstab": "# /etc/fstab\nUUID=" + uuid + " / " + fstype + " defaults 0 1\n" +
			"proc /proc proc defaults 0 0\ntmpfs /tmp tmpfs defaults 0 0\n/dev/vda1 /mnt/x " + fstype + " noauto 0 0\n",
		"bin":           "->usr/bin",
		"lib":           "->usr/lib",
		"usr/bin/sh":    "->bash",
		"usr/bin/bash":  ELF64,
		"usr/sbin/sshd": ELF64,
		"usr/lib/modules/5.14.0-1.el9.x86_64/modules.builtin":     "kernel/drivers/block/virtio_blk.ko\nkernel/drivers/char/mem.ko\n",
		"usr/lib/modules/5.14.0-1.el9.x86_64/modules.dep":         "kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz\n",
		"usr/lib/systemd/system/sshd.service":                     "[Unit]\nDescription=OpenSSH server daemon\n",
		"usr/lib/systemd/system/jcs-agent-core.service":           "[Unit]\nDescription=JCS agent\n",
		"etc/systemd/system/multi-user.target.wants/sshd.service": "->/usr/lib/systemd/system/sshd.service",
		"etc/sysconfig/network-scripts/ifcfg-eth0":                "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n",
		"etc/selinux/config":                                      "SELINUX=disabled\nSELINUXTYPE=targeted\n",
		"etc/udev/rules.d/":                                       "",
	}
}

// Cpio builds a newc cpio archive (what an initramfs holds) of regular
// files, in name order, with its trailer, padded to 512 bytes.
func Cpio(files map[string]string) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	member := func(ino int, name, data string, mode int) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		b.WriteString(name)
		b.WriteByte(0)
		pad()
		b.WriteString(data)
		pad()
	}
	names := slices.Sorted(maps.Keys(files))
	for i, n := range names {
		member(i+1, n, files[n], 0o100644)
	}
	member(0, "TRAILER!!!", "", 0)
	for b.Len()%512 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}
