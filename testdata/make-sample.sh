#!/usr/bin/env bash
# Rebuilds testdata/sample.qcow2: a 64 MiB disk with an MBR partition table,
# one active Linux partition holding an ext4 file system with a small tree
# (os-release, fstab, text and random files), zlib-compressed QCOW2 v3.
# Needs sfdisk, mkfs.ext4 and qemu-img; no root.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/etc" "$work/root/var/log" "$work/root/usr/bin"
printf 'NAME="Sample Linux"\nID=sample\nVERSION_ID="1.0"\n' > "$work/root/etc/os-release"
printf 'UUID=6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0 / ext4 defaults 0 1\n' > "$work/root/etc/fstab"
for i in $(seq 1 2000); do echo "log line $i: the quick brown fox jumps over the lazy dog"; done > "$work/root/var/log/messages"
head -c 262144 /dev/urandom > "$work/root/usr/bin/program"
mkfs.ext4 -q -F -E root_owner=0:0 -U 6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0 -d "$work/root" "$work/part.ext4" 31M
truncate -s 64M "$work/disk.raw"
dd if="$work/part.ext4" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
printf 'label: dos\nlabel-id: 0x12345678\nstart=2048, size=63488, type=83, bootable\n' | sfdisk -q "$work/disk.raw"
qemu-img convert -c -O qcow2 -o compression_type=zlib "$work/disk.raw" sample.qcow2
ls -l sample.qcow2
