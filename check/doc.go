// Package check verifies a disk image against the target cloud's import
// rules offline, from the guest-visible disk bytes (an image.Image, read
// through io.ReaderAt), before a byte is uploaded.
//
// Run reads the partition table (MBR with its chain of extended boot
// records, or GPT), identifies every partition by its superblock (ext2/3/4,
// xfs, NTFS, vfat, swap, LVM2, LUKS, btrfs, md RAID, ISO 9660), finds the
// Linux root file system (the one with /etc/fstab and /etc/os-release), or
// else the Windows system volume, and reads the files the rules need. The readers live below, in
// internal packages: part (MBR, EBR chains, GPT), guestfs (the superblock
// probe and two small read-only file system readers: ext4 (superblock, group descriptors, inodes, extent trees
// and the old block maps, linear and htree directories read linearly, fast
// and slow symlinks) and xfs (v4 and v5 inodes, local / extent-list /
// B+tree data forks, short-form, block, leaf and node directories, local
// and remote symlinks) and initramfs (member names of a cpio initramfs).
// Every on-disk field is checked before use, and the readers are fuzzed
// (fuzz_test.go, with the seeds in testdata). This package keeps the rules,
// the report and the size policy; CLI words stay with the callers.
//
// github.com/diskfs/go-diskfs v1.9.4 was evaluated for the ext4 part: it
// reads ext4 correctly through an io.ReaderAt section (with a small
// backend.Storage shim), but it panicked on 3 of 300 randomly corrupted
// images (slice bounds in the extent tree of an inode) and has no xfs, so a
// common reader interface and an xfs reader were needed anyway.
//
// Windows guests (windows.go) are read the same way, offline: NTFS by
// check/internal/ntfs (MFT records with their fixups and attribute lists,
// data runs, the $I30 B+tree descended by name, case-insensitively;
// $Volume's flags; $Bitmap for the space used) and the registry by
// check/internal/hive (nk, vk, lf/lh/li/ri lists, big data), both with
// budgets of what one volume or hive may make them read. The system is
// found as libguestfs finds it (\Windows with System32\config\SYSTEM), the
// rules read SYSTEM (control set from Select\Current) and SOFTWARE, and a
// panic of a reader is recovered into a finding.
//
// www.velocidex.com/golang/go-ntfs v0.2.1 and .../regparser (the newest
// pseudo-version) were evaluated first: go-ntfs held up on quick mutations
// but brings forks of json, yaml and ordereddict, go-spew and global
// counters for what is here one file; regparser's accessors return no
// errors (a corrupt cell reads as an empty key), and its log replay takes
// *os.File, writes a temporary copy and prints to stdout, and allocates a
// log page by its header's size. Dirty hives are therefore reported
// (windows.hive-dirty), not replayed.
//
// The findings carry a rule id, a severity, a message saying how to fix
// the problem, and evidence (partition, file, registry key and value, disk
// offset). The rule ids are the Rule* constants; README.md has the table.
package check
