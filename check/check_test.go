package check

import (
	"bytes"
	"compress/gzip"
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"vmimport/internal/testkit"
	"vmimport/reader"
)

const rootUUID = "6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0"

var elf32 = testkit.ELF32

func cleanRoot(fstype string) map[string]string { return testkit.LinuxRoot(fstype, rootUUID) }

func rootPart(fstype string, files map[string]string) testkit.FSPart {
	return testkit.FSPart{SizeMiB: 48, Bootable: true, FS: fstype, UUID: rootUUID, Files: files}
}

func with(m map[string]string, kv ...string) map[string]string {
	m = maps.Clone(m)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" && !strings.HasSuffix(kv[i], "/") {
			delete(m, kv[i])
			continue
		}
		m[kv[i]] = kv[i+1]
	}
	return m
}

func runCheck(t *testing.T, path string, o Options) *Report {
	t.Helper()
	im, err := reader.Open(path, reader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if o.Format == "" {
		o.Format = im.Info().Format
	}
	r, err := Run(context.Background(), im, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const kver = "5.14.0-1.el9.x86_64"
const kdir = "usr/lib/modules/" + kver

// initramfs is an uncompressed early-microcode archive followed by a
// compressed one, with or without the virtio_blk module.
func makeInitramfs(t testing.TB, compression string, virtio bool) string {
	files := map[string]string{"usr/lib/modules/" + kver + "/kernel/fs/xfs/xfs.ko.xz": "module", "init": "#!/bin/sh\n"}
	if virtio {
		files["usr/lib/modules/"+kver+"/kernel/drivers/block/virtio_blk.ko.xz"] = "module"
	}
	var main bytes.Buffer
	switch compression {
	case "gzip":
		z := gzip.NewWriter(&main)
		z.Write(testkit.Cpio(files))
		z.Close()
	case "zstd":
		z, err := zstd.NewWriter(&main)
		if err != nil {
			t.Fatal(err)
		}
		z.Write(testkit.Cpio(files))
		z.Close()
	}
	return string(testkit.Cpio(map[string]string{"kernel/x86/microcode/GenuineIntel.bin": "ucode"})) + main.String()
}

func TestRules(t *testing.T) {
	clean := cleanRoot("ext4")
	cases := []struct {
		name  string
		disk  testkit.RootDiskOptions
		opts  Options
		grow  int64 // truncate the disk to this size afterwards
		patch func(t *testing.T, disk string)
		rules []string
	}{
		{name: "clean", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4", clean)}}},
		{name: "clean-ext3", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext3", cleanRoot("ext3"))}}},
		{name: "clean-xfs", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 48, Bootable: true, FS: "xfs", UUID: rootUUID, Files: cleanRoot("xfs")}}}},
		{name: "boot-and-swap", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 16, Bootable: true, FS: "ext4", Label: "BOOT", Files: map[string]string{"grub2/grub.cfg": "set timeout=5\n"}},
			{SizeMiB: 8, Type: "82", FS: "swap", UUID: "8d3c2a9e-58e1-4a7c-9b1e-3f1d2c4b5a69"},
			{SizeMiB: 48, FS: "ext4", UUID: rootUUID, Files: with(clean, "etc/fstab",
				"UUID="+rootUUID+" / ext4 defaults 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\nUUID=8d3c2a9e-58e1-4a7c-9b1e-3f1d2c4b5a69 none swap sw 0 0\nPARTUUID=12345678-01 /boot2 ext4 defaults 0 0\n")}}}},
		{name: "windows-unreadable", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 1, Type: "7", Bootable: true, FS: "ntfs"}, {SizeMiB: 4, Type: "7", FS: "ntfs"}}},
			rules: []string{RuleUnchecked, RuleWindowsOff}},
		{name: "gpt", disk: testkit.RootDiskOptions{Label: "gpt", Parts: []testkit.FSPart{rootPart("ext4", clean)}},
			rules: []string{RuleGPT}},
		{name: "gpt-esp", disk: testkit.RootDiskOptions{Label: "gpt", Parts: []testkit.FSPart{
			{SizeMiB: 8, Type: "U", FS: "vfat"}, rootPart("ext4", clean)}},
			rules: []string{RuleEFI, RuleGPT}},
		{name: "mbr-esp", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 8, Type: "ef", FS: "vfat"}, rootPart("ext4", clean)}},
			rules: []string{RuleEFI}},
		{name: "lvm", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			rootPart("ext4", clean), {SizeMiB: 4, Type: "8e", FS: "lvm"}}},
			rules: []string{RuleLVM}},
		{name: "lvm-only", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 4, Bootable: true, FS: "lvm"}}},
			rules: []string{RuleLVM}},
		{name: "luks", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			rootPart("ext4", clean), {SizeMiB: 4, FS: "luks"}}},
			rules: []string{RuleLUKS}},
		{name: "btrfs", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			rootPart("ext4", clean), {SizeMiB: 4, FS: "btrfs"}}},
			rules: []string{RuleBtrfs}},
		{name: "no-boot-code", disk: testkit.RootDiskOptions{Parts: []testkit.FSPart{rootPart("ext4", clean)}},
			rules: []string{RuleBootCode}},
		{name: "no-active", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 48, FS: "ext4", UUID: rootUUID, Files: clean}}},
			rules: []string{RuleActive}},
		{name: "ext2-root", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext2", cleanRoot("ext2"))}},
			rules: []string{RuleRootFS}},
		{name: "no-root", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 16, Bootable: true, FS: "ext4", Files: map[string]string{"data/x": "x"}}}},
			rules: []string{RuleRootFS}},
		{name: "fstab-stale-uuid", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "etc/fstab", "UUID="+rootUUID+" / ext4 defaults 0 1\nUUID=0a0b0c0d-1111-2222-3333-444455556666 /data xfs defaults 0 0\n"))}},
			rules: []string{RuleFstabUUID}},
		{name: "fstab-sdb1", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "etc/fstab", "UUID="+rootUUID+" / ext4 defaults 0 1\n/dev/sdb1 /data ext4 defaults 0 0\n"))}},
			rules: []string{RuleFstabDevice}},
		{name: "fstab-nfs", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "etc/fstab", "UUID="+rootUUID+" / ext4 defaults 0 1\nnas:/export /data nfs defaults 0 0\nshare /media/sf vboxsf defaults 0 0\n"))}},
			rules: []string{RuleFstabNetwork}},
		{name: "persistent-net", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "etc/udev/rules.d/70-persistent-net.rules", "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\", NAME=\"eth0\"\n"))}},
			rules: []string{RulePersistentNet}},
		{name: "cloud-init", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "usr/bin/cloud-init", "#!/usr/bin/python3\n"))}},
			rules: []string{RuleCloudInit}},
		{name: "qemu-ga-dpkg", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "var/lib/dpkg/status", "Package: bash\nStatus: install ok installed\n\nPackage: qemu-guest-agent\nStatus: install ok installed\nVersion: 1:6.2\n\nPackage: cloud-init\nStatus: deinstall ok config-files\n"))}},
			rules: []string{RuleQemuGA}},
		{name: "no-virtio", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "usr/lib/modules/5.14.0-1.el9.x86_64/modules.builtin", "kernel/drivers/char/mem.ko\n",
				"usr/lib/modules/5.14.0-1.el9.x86_64/modules.dep", "kernel/drivers/net/e1000.ko.xz:\n"))}},
			rules: []string{RuleVirtio}},
		{name: "virtio-module-in-initramfs", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, kdir+"/modules.builtin", "kernel/drivers/char/mem.ko\n",
				kdir+"/modules.dep", "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz\nkernel/drivers/net/virtio_net.ko.xz:\n",
				"boot/initramfs-"+kver+".img", makeInitramfs(t, "gzip", true)))}}},
		{name: "virtio-module-not-in-initramfs", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
			{SizeMiB: 8, Bootable: true, FS: "ext4", Label: "boot", Files: map[string]string{"initramfs-" + kver + ".img": makeInitramfs(t, "zstd", false)}},
			{SizeMiB: 48, FS: "ext4", UUID: rootUUID, Files: with(clean, kdir+"/modules.builtin", "kernel/drivers/char/mem.ko\n",
				kdir+"/modules.dep", "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz\nkernel/drivers/net/virtio_net.ko.xz:\n")}}},
			rules: []string{RuleVirtio}},
		{name: "dhcp-by-networkmanager", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "etc/sysconfig/network-scripts/ifcfg-eth0", "",
				"etc/systemd/system/multi-user.target.wants/NetworkManager.service", "->/usr/lib/systemd/system/NetworkManager.service"))}}},
		{name: "fstab-by-id", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "etc/fstab", "UUID="+rootUUID+" / ext4 defaults 0 1\n/dev/disk/by-id/ata-WDC_WD10-part1 /data ext4 defaults 0 0\n"))}},
			rules: []string{RuleFstabDevice}},
		{name: "32-bit", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "usr/bin/bash", elf32))}},
			rules: []string{RuleArch}},
		{name: "selinux-sshd-dhcp-agent", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
			with(clean, "etc/selinux/config", "SELINUX=enforcing\n",
				"etc/systemd/system/multi-user.target.wants/sshd.service", "",
				"etc/sysconfig/network-scripts/ifcfg-eth0", "BOOTPROTO=static\nIPADDR=10.0.0.5\n",
				"usr/lib/systemd/system/jcs-agent-core.service", ""))}},
			rules: []string{RuleDHCP, RuleAgent, RuleSELinux, RuleSSHD}},
		{name: "dirty", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4", clean)}},
			patch: func(t *testing.T, disk string) {
				// Set needs_recovery in the root file system's superblock.
				f, err := os.OpenFile(disk, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				b := make([]byte, 4)
				off := int64(1<<20 + 1024 + 0x60)
				if _, err := f.ReadAt(b, off); err != nil {
					t.Fatal(err)
				}
				b[0] |= 0x4 // EXT4_FEATURE_INCOMPAT_RECOVER
				if _, err := f.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
			},
			rules: []string{RuleDirty}},
		{name: "600GiB", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4", clean)}},
			grow: 600 * GiB, rules: []string{RuleVirtualSize}},
		{name: "disk-size-45", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4", clean)}},
			opts: Options{DiskSizeGB: 45}, rules: []string{RuleDiskSize}},
		{name: "shrink-ok", disk: testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4", clean)}},
			grow: 600 * GiB, opts: Options{DiskSizeGB: 40, Shrink: true}},
		{name: "shrink-partition-beyond", disk: testkit.RootDiskOptions{BootCode: true, SizeMiB: 41 << 10, Parts: []testkit.FSPart{rootPart("ext4", clean), {SizeMiB: 40 << 10}}},
			opts: Options{DiskSizeGB: 40, Shrink: true}, rules: []string{RuleDataBeyond}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			disk := testkit.MakeRootDisk(t, t.TempDir(), c.disk)
			if c.patch != nil {
				c.patch(t, disk)
			}
			if c.grow > 0 {
				if err := os.Truncate(disk, c.grow); err != nil {
					t.Fatal(err)
				}
			}
			r := runCheck(t, disk, c.opts)
			got := r.Rules(Warning)
			want := slices.Clone(c.rules)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				var b strings.Builder
				r.WriteText(&b, Info)
				t.Fatalf("rules %v, want %v\n%s", got, want, b.String())
			}
			for _, f := range r.Findings {
				if f.Message == "" || f.Rule == "" {
					t.Errorf("finding without rule or message: %+v", f)
				}
			}
			if len(want) == 0 && r.Status != "pass" {
				t.Errorf("status %q, want pass", r.Status)
			}
		})
	}
}

func TestWindows(t *testing.T) {
	t.Parallel()
	disk := testkit.MakeRootDisk(t, t.TempDir(), testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{
		{SizeMiB: 1, Type: "7", Bootable: true, FS: "ntfs"}}})
	r := runCheck(t, disk, Options{})
	// A bare NTFS boot sector: Windows, but nothing to read.
	if r.OS.OSType != "windows" || r.OS.Platform != "Other Windows" || !r.Has(RuleWindowsOff) || !r.Has(RuleUnchecked) || r.Partitions[0].UUID != "90ABCDEF12345678" {
		t.Errorf("%+v %+v", r.OS, r.Partitions)
	}
}

func TestCleanReport(t *testing.T) {
	t.Parallel()
	disk := testkit.MakeRootDisk(t, t.TempDir(), testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4", cleanRoot("ext4"))}})
	r := runCheck(t, disk, Options{})
	want := OS{OSType: "linux", Platform: "CentOS", Name: "CentOS Linux", ID: "centos", Version: "7", Architecture: "x86_64", RootPartition: 1}
	if r.OS != want {
		t.Errorf("OS %+v, want %+v", r.OS, want)
	}
	if f := r.ImportFields(); f != (ImportFields{"x86_64", "linux", "CentOS", "7"}) {
		t.Errorf("import fields %+v", f)
	}
	if f := (&Report{}).ImportFields(); f != (ImportFields{"x86_64", "linux", "Other Linux", ""}) {
		t.Errorf("default import fields %+v", f)
	}
	if got := r.Rules(Info); !slices.Equal(got, []string{RuleOS, RuleOffline}) {
		t.Errorf("info rules %v", got)
	}
	if r.PartitionTable != "mbr" || len(r.Partitions) != 1 || r.Partitions[0].FS != "ext4" || r.Partitions[0].UUID != rootUUID || r.Partitions[0].Mount != "/" {
		t.Errorf("partitions %+v", r.Partitions)
	}
	if r.SystemDiskSizeGB != 40 || r.Status != "pass" {
		t.Errorf("size %d, status %s", r.SystemDiskSizeGB, r.Status)
	}
}

// TestExistingTestkitDisk: testkit.MakeDisk's disk has no boot code, a
// stale fstab UUID and none of the system files.
func TestMakeDisk(t *testing.T) {
	t.Parallel()
	disk := testkit.MakeDisk(t, t.TempDir(), testkit.DiskOptions{SizeMiB: 32, DataMiB: 1})
	r := runCheck(t, disk, Options{})
	for _, rule := range []string{RuleBootCode, RuleFstabUUID, RuleVirtio, RuleSSHD} {
		if !r.Has(rule) {
			t.Errorf("no %s finding", rule)
		}
	}
	if r.OS.Name != "Test Linux" || r.OS.Platform != "Other Linux" {
		t.Errorf("OS %+v", r.OS)
	}
}

func TestQCOW2Source(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disk := testkit.MakeRootDisk(t, dir, testkit.RootDiskOptions{BootCode: true, Parts: []testkit.FSPart{rootPart("ext4",
		with(cleanRoot("ext4"), "usr/bin/cloud-init", "x"))}})
	q := testkit.Convert(t, disk, filepath.Join(dir, "disk.qcow2"), "qcow2")
	r := runCheck(t, q, Options{})
	if got := r.Rules(Warning); !slices.Equal(got, []string{RuleCloudInit}) || r.Format != "qcow2" {
		t.Errorf("rules %v, format %s", got, r.Format)
	}
}
