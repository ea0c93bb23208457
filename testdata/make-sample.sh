#!/usr/bin/env bash
# Rebuilds testdata/sample.qcow2: a 64 MiB disk with an MBR partition table
# and boot code, one active Linux partition holding an ext4 file system with
# the skeleton of a system that passes `convert check` (os-release, fstab by
# UUID, a 64-bit /bin/sh header, sshd enabled, DHCP on eth0, virtio drivers
# built into the kernel, the cloud's agent folder) plus text and random
# files, as zlib-compressed QCOW2 v3.
# Needs sfdisk, mkfs.ext4 and qemu-img; no root.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/etc/network" "$work/root/var/log" "$work/root/usr/bin" "$work/root/usr/sbin" "$work/root/bin" \
  "$work/root/lib/modules/6.1.0-sample" "$work/root/lib/systemd/system" \
  "$work/root/etc/systemd/system/multi-user.target.wants" "$work/root/usr/local/share/jcs-agent"
# An ELF64 x86-64 header is all the architecture rule reads of /bin/sh.
printf '\177ELF\002\001\001\000\000\000\000\000\000\000\000\000\003\000\076\000\001\000\000\000' > "$work/root/bin/sh"
head -c 40 /dev/zero >> "$work/root/bin/sh"
printf '#!/bin/sh\n# placeholder for the OpenSSH server\n' > "$work/root/usr/sbin/sshd"
printf '[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n' > "$work/root/lib/systemd/system/ssh.service"
ln -s /lib/systemd/system/ssh.service "$work/root/etc/systemd/system/multi-user.target.wants/ssh.service"
printf 'kernel/drivers/block/virtio_blk.ko\nkernel/drivers/net/virtio_net.ko\nkernel/drivers/virtio/virtio_pci.ko\n' > "$work/root/lib/modules/6.1.0-sample/modules.builtin"
printf 'auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n' > "$work/root/etc/network/interfaces"
printf 'placeholder for the JCS agent\n' > "$work/root/usr/local/share/jcs-agent/README"
printf 'NAME="Sample Linux"\nID=sample\nVERSION_ID="1.0"\n' > "$work/root/etc/os-release"
printf 'UUID=6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0 / ext4 defaults 0 1\n' > "$work/root/etc/fstab"
for i in $(seq 1 2000); do echo "log line $i: the quick brown fox jumps over the lazy dog"; done > "$work/root/var/log/messages"
head -c 262144 /dev/urandom > "$work/root/usr/bin/program"
mkfs.ext4 -q -F -E root_owner=0:0 -U 6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0 -d "$work/root" "$work/part.ext4" 31M
truncate -s 64M "$work/disk.raw"
dd if="$work/part.ext4" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
# Boot code in the MBR's first bytes (cli; xor ax,ax; mov ss,ax; mov sp,0x7c00; sti; hlt; jmp $):
# the check wants a disk that can boot by BIOS; sfdisk keeps these bytes.
printf '\372\061\300\216\320\274\000\174\373\364\353\375' | dd of="$work/disk.raw" conv=notrunc status=none
printf 'label: dos\nlabel-id: 0x12345678\nstart=2048, size=63488, type=83, bootable\n' | sfdisk -q "$work/disk.raw"
qemu-img convert -c -O qcow2 -o compression_type=zlib "$work/disk.raw" sample.qcow2
ls -l sample.qcow2
