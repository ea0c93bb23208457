package check

import (
	"context"
	"fmt"
	"io"
	"strings"

	"vmimport/check/internal/guestfs"
	"vmimport/check/internal/part"
)

// Disk is what the check reads: the guest-visible bytes of the disk (an
// image.Image fits), never the container file.
type Disk interface {
	io.ReaderAt
	Size() int64
}

// Options configure a check.
type Options struct {
	// Format is the source format as the reader names it ("qcow2",
	// "raw", "vmdk", "vhd", ...); empty when not known.
	Format string
	// DiskSizeGB is the requested system disk size (0: the smallest that
	// fits).
	DiskSizeGB int64
	// Shrink allows a virtual size above DiskSizeGB when everything beyond
	// is zero and every partition ends inside it.
	Shrink bool
}

// Rule ids, as findings carry them.
const (
	RuleFormat        = "image.format"
	RuleVirtualSize   = "image.virtual-size"
	RuleDiskSize      = "image.disk-size"
	RuleDataBeyond    = "image.data-beyond"
	RuleDigest        = "image.digest"
	RulePartTable     = "part.table"
	RuleGPT           = "part.gpt"
	RuleEFI           = "part.efi"
	RuleBootCode      = "part.boot-code"
	RuleActive        = "part.active"
	RuleBounds        = "part.bounds"
	RuleRootFS        = "fs.root"
	RuleLVM           = "fs.lvm"
	RuleLUKS          = "fs.luks"
	RuleBtrfs         = "fs.btrfs"
	RuleMD            = "fs.mdraid"
	RuleSpace         = "fs.space"
	RuleInodes        = "fs.inodes"
	RuleUnchecked     = "fs.unchecked"
	RuleDirty         = "fs.dirty"
	RuleOS            = "linux.os"
	RuleArch          = "linux.arch"
	RuleFstabUUID     = "linux.fstab-uuid"
	RuleFstabDevice   = "linux.fstab-device"
	RuleFstabNetwork  = "linux.fstab-network"
	RulePersistentNet = "linux.persistent-net"
	RuleCloudInit     = "linux.cloud-init"
	RuleQemuGA        = "linux.qemu-guest-agent"
	RuleVirtio        = "linux.virtio"
	RuleSELinux       = "linux.selinux"
	RuleSSHD          = "linux.sshd"
	RuleAgent         = "linux.jcs-agent"
	RuleDHCP          = "linux.dhcp"
	RuleWindowsOff    = "windows.unchecked"
	RuleOffline       = "offline.unchecked"
)

// MaxUsedPct is the most a file system may be used (space and inodes).
const MaxUsedPct = 98

// importable reports whether ImportImage takes the format as it is.
func importable(format string) bool {
	switch strings.ToLower(format) {
	case "raw", "qcow2", "vmdk", "vhd":
		return true
	}
	return false
}

// Run checks a disk against the cloud's import rules. It fails only when
// ctx ends; everything else, unreadable structures included, becomes a
// finding.
func Run(ctx context.Context, d Disk, o Options) (*Report, error) {
	size := d.Size()
	r := &Report{Format: o.Format, VirtualSize: size}

	if o.Format != "" && !importable(o.Format) {
		r.addf(RuleFormat, Info, "%s is not a format ImportImage takes; the converted output (RAW or QCOW2) is what gets imported", o.Format)
	}

	effective := size
	if o.Shrink && o.DiskSizeGB > 0 && o.DiskSizeGB*GiB < size {
		effective = o.DiskSizeGB * GiB
	}
	if gb, err := DiskSize(effective, o.DiskSizeGB); err != nil {
		rule := RuleDiskSize
		if VirtualGB(effective) > MaxDiskGB {
			rule = RuleVirtualSize
		}
		r.addf(rule, Error, "%s", strings.TrimPrefix(err.Error(), ErrRule.Error()+": "))
		r.SystemDiskSizeGB = gb
	} else {
		r.SystemDiskSizeGB = gb
	}

	t := part.Read(d, size)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.PartitionTable = t.Kind
	partitions(r, t, size)
	if effective < size {
		if err := shrinkRules(ctx, r, d, effective); err != nil {
			return nil, err
		}
	}
	if err := fileSystems(ctx, r, d, t); err != nil {
		return nil, err
	}
	r.finish()
	return r, nil
}

// partitions applies the partition table and boot rules.
func partitions(r *Report, t *part.Table, size int64) {
	for _, p := range t.Problems {
		f := r.addf(RulePartTable, Error, "%s: the cloud boots MBR-partitioned disks only", p.Msg)
		f.Offset = at(p.Off)
	}
	switch t.Kind {
	case "gpt":
		msg := "the disk has a GPT partition table: the cloud boots MBR disks by BIOS only; convert it to MBR (gdisk: r, g) with a BIOS boot loader, or rebuild the disk"
		if t.Hybrid {
			msg = "the disk has a hybrid MBR over a GPT: the cloud expects a plain MBR; remove the GPT (sgdisk -z after saving the MBR) or rebuild the disk"
		}
		f := r.addf(RuleGPT, Error, "%s", msg)
		f.Offset = at(512)
	case "mbr":
		if !t.BootCode {
			f := r.addf(RuleBootCode, Error, "the MBR has no boot code (its first 440 bytes are zero): the disk cannot boot by BIOS; install GRUB on it (grub2-install /dev/sda, or grub-install)")
			f.Offset = at(0)
		}
		active := 0
		for _, p := range t.Parts {
			if p.Active && !p.Logical {
				active++
			}
		}
		if active != 1 {
			f := r.addf(RuleActive, Error, "the MBR has %d active (bootable) primary partitions, not exactly one: mark the boot partition active (fdisk: a, or sfdisk --activate /dev/sda N)", active)
			f.Offset = at(446)
		}
	}
	for _, p := range t.Parts {
		if p.Start < 0 || p.Start+p.Size > size || p.Size <= 0 {
			f := r.addf(RuleBounds, Error, "partition %d (%d bytes at offset %d) ends past the end of the disk (%d bytes): the partition table or the image is damaged", p.Index, p.Size, p.Start, size)
			f.Partition, f.Offset = p.Index, at(p.Start)
		}
		if strings.EqualFold(p.Type, "0xef") || strings.EqualFold(p.Type, part.ESPGUID) {
			f := r.addf(RuleEFI, Error, "partition %d is an EFI system partition: the system boots by UEFI, but the cloud boots by BIOS only; install a BIOS boot loader (GRUB for i386-pc) and remove the EFI partition", p.Index)
			f.Partition, f.Offset = p.Index, at(p.Start)
		}
	}
	r.Partitions = partitionsOf(t)
}

// partitionsOf is the report's view of the table's entries.
func partitionsOf(t *part.Table) []Partition {
	var ps []Partition
	for _, e := range t.Parts {
		ps = append(ps, Partition{Index: e.Index, Start: e.Start, Size: e.Size, Type: e.Type, Active: e.Active, Logical: e.Logical, Label: e.Label})
	}
	return ps
}

// volumeType names the volume format an MBR or GPT partition type marks
// (LVM, md RAID), or "".
func volumeType(typ string) string {
	switch strings.ToLower(typ) {
	case "0x8e", "e6d6d379-f507-44c2-a23c-238f2a3df928":
		return "lvm2"
	case "0xfd", "a19d880f-05fc-4d3b-a006-743f0f84911e":
		return "md"
	}
	return ""
}

// fileSystems probes every partition, applies the volume and usage rules,
// finds the root file system and runs the rules inside it.
func fileSystems(ctx context.Context, r *Report, d Disk, t *part.Table) error {
	size := d.Size()
	parts := r.Partitions
	if t.Kind == "none" && size > 0 {
		// An unpartitioned disk: the whole disk may hold a file system.
		parts = []Partition{{Index: 0, Start: 0, Size: size, Type: "whole disk"}}
	}
	view := &diskView{uuids: map[string]bool{}, labels: map[string]bool{}, partuuids: map[string]bool{}}
	var volumes []string
	for i := range parts {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := &parts[i]
		if p.Start < 0 || p.Start >= size || p.Size <= 0 || part.IsExtended(p.Type) {
			continue
		}
		psize := min(p.Size, size-p.Start)
		fi := guestfs.Probe(io.NewSectionReader(d, p.Start, psize), psize)
		if fi.Type == "" {
			fi.Type = volumeType(p.Type)
		}
		p.FS = fi.Type
		if fi.UUID != "" {
			p.UUID = fi.UUID
			view.uuids[strings.ToLower(fi.UUID)] = true
		}
		if fi.Label != "" {
			if p.Label == "" {
				p.Label = fi.Label
			}
			view.labels[fi.Label] = true
		}
		if fi.Used >= 0 {
			p.UsedPct = fi.Used
		}
		if fi.Inodes >= 0 {
			p.InodesPct = fi.Inodes
		}
		if t.Kind == "mbr" && p.Index > 0 {
			view.partuuids[fmt.Sprintf("%08x-%02x", t.DiskID, p.Index)] = true
		}
		if u, ok := t.GPTUnique[p.Index]; ok {
			view.partuuids[u] = true
		}
		ev := func(f *Finding) { f.Partition, f.Offset = p.Index, at(p.Start+fi.Magic) }
		switch fi.Type {
		case "lvm2":
			ev(r.addf(RuleLVM, Error, "partition %d is an LVM physical volume: the cloud's import does not support LVM; move the system onto plain partitions", p.Index))
		case "luks":
			ev(r.addf(RuleLUKS, Error, "partition %d is encrypted (LUKS): the cloud cannot read or boot it unattended; decrypt it before exporting", p.Index))
		case "btrfs":
			ev(r.addf(RuleBtrfs, Error, "partition %d holds btrfs: the cloud imports ext3, ext4 and xfs (Linux) or NTFS (Windows) only; move the data onto one of those", p.Index))
		case "md":
			ev(r.addf(RuleMD, Error, "partition %d is a member of a software RAID (md): the cloud imports single plain disks only; move the system off the RAID", p.Index))
		case "iso9660":
			ev(r.addf(RuleFormat, Error, "the disk holds an ISO 9660 (CD/DVD) image: the cloud does not import ISO; install the system onto a disk and import that"))
		}
		if fi.Dirty != "" {
			ev(r.addf(RuleDirty, Warning, "partition %d (%s) was not unmounted cleanly (%s): the image was taken from a running or crashed system, and files read here may be stale; shut the guest down cleanly (or run fsck) and export again", p.Index, fi.Type, fi.Dirty))
		}
		if fi.Used > MaxUsedPct {
			ev(r.addf(RuleSpace, Warning, "partition %d (%s) is %.1f%% full, above %d%%: the system may fail to boot or log; free some space", p.Index, fi.Type, fi.Used, MaxUsedPct))
		}
		if fi.Inodes > MaxUsedPct {
			ev(r.addf(RuleInodes, Warning, "partition %d (%s) uses %.1f%% of its inodes, above %d%%: delete small files", p.Index, fi.Type, fi.Inodes, MaxUsedPct))
		}
		if fi.Type != "" {
			volumes = append(volumes, fi.Type)
		}
	}
	r.Partitions = parts
	if t.Kind == "none" {
		r.Partitions = nil
		if len(parts) == 1 && parts[0].FS != "" {
			r.Partitions = parts
		}
	}
	return rootRules(ctx, r, d, parts, view, volumes)
}

type candidate struct {
	p     *Partition
	t     *guestfs.Tree
	score int
}

func rootRules(ctx context.Context, r *Report, d Disk, parts []Partition, view *diskView, volumes []string) error {
	var best *candidate
	var others []candidate
	var windows []*Partition
	// passed says why the partitions that might have held the root did
	// not, for a check that finds none.
	var passed []string
	for i := range parts {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := &parts[i]
		var fsys guestfs.FS
		var err error
		sec := io.NewSectionReader(d, p.Start, max(0, min(p.Size, d.Size()-p.Start)))
		switch p.FS {
		case "ext2", "ext3", "ext4":
			fsys, err = guestfs.OpenExt4(sec, sec.Size())
		case "xfs":
			fsys, err = guestfs.OpenXFS(sec, sec.Size())
		case "ntfs", "bitlocker":
			windows = append(windows, p)
			continue
		default:
			continue
		}
		if err != nil {
			f := r.addf(RuleUnchecked, Info, "partition %d (%s) could not be read, so the rules inside it were not checked: %v", p.Index, p.FS, err)
			f.Partition = p.Index
			passed = append(passed, fmt.Sprintf("partition %d (%s) could not be read", p.Index, p.FS))
			continue
		}
		t := guestfs.NewTree(fsys)
		score := 0
		if t.Exists("/etc/fstab") {
			score++
		}
		if t.Exists("/etc/os-release") || t.Exists("/usr/lib/os-release") {
			score++
		}
		if t.Exists("/bin/sh") || t.Exists("/usr/bin") {
			score++
		}
		c := candidate{p: p, t: t, score: score}
		if score == 0 {
			passed = append(passed, fmt.Sprintf("partition %d (%s) holds none of /etc/fstab, /etc/os-release, /bin/sh and /usr/bin (a data or /boot file system?)", p.Index, p.FS))
		}
		others = append(others, c)
		if score > 0 && (best == nil || score > best.score) {
			best = &c
		}
	}
	hasVolume := false
	for _, v := range volumes {
		if v == "lvm2" || v == "luks" || v == "md" || v == "btrfs" || v == "iso9660" {
			hasVolume = true
		}
	}
	switch {
	case best != nil:
		p := best.p
		p.Mount = "/"
		r.OS.RootPartition = p.Index
		if p.FS == "ext2" {
			f := r.addf(RuleRootFS, Error, "the root file system (partition %d) is ext2: the cloud imports ext3, ext4 or xfs; add a journal (tune2fs -j) and set ext3 in /etc/fstab", p.Index)
			f.Partition = p.Index
		}
		l := &linux{t: best.t, r: r, part: p.Index, disk: view}
		for _, o := range others {
			if o.p != p {
				l.boot = append(l.boot, bootFS{o.t, o.p.Index, "/"})
			}
		}
		l.run()
		r.addf(RuleOffline, Info, "not checked offline (they need the running system): the firewall is off with TCP 22 open, no IPv6 dependence, and the agent's health")
	case len(windows) > 0:
		windowsRules(r, d, windows)
	case hasVolume:
		r.addf(RuleRootFS, Info, "no root file system was found outside the LVM, encrypted, RAID, btrfs or ISO volumes; it is probably inside them")
	default:
		why := ""
		if len(passed) > 0 {
			why = " (" + strings.Join(passed, "; ") + ")"
		}
		r.addf(RuleRootFS, Error, "no root file system was found%s: the cloud needs a Linux system on ext3, ext4 or xfs, or Windows on NTFS, on a plain MBR partition", why)
	}
	return nil
}

// shrinkRules checks that a disk may be cut to limit bytes: every partition
// ends inside, and everything beyond reads as zero.
func shrinkRules(ctx context.Context, r *Report, d Disk, limit int64) error {
	for _, p := range r.Partitions {
		if p.Start+p.Size > limit {
			f := r.addf(RuleDataBeyond, Error, "partition %d ends at byte %d, beyond the requested system disk size (%d bytes): shrink the partition in the guest first, or ask for a larger disk", p.Index, p.Start+p.Size, limit)
			f.Partition, f.Offset = p.Index, at(p.Start)
		}
	}
	off, err := FirstData(ctx, d, limit)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		f := r.addf(RuleDataBeyond, Error, "the bytes beyond the requested size could not be read: %v", err)
		f.Offset = at(limit)
		return nil
	}
	if off >= 0 {
		f := r.addf(RuleDataBeyond, Error, "non-zero data at offset %d, beyond the requested system disk size (%d bytes): it would be lost; shrink the file systems and partitions in the guest first, or ask for a larger disk", off, limit)
		f.Offset = at(off)
	}
	return nil
}
