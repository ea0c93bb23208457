#!/usr/bin/env bash
# Installs what `make bench` needs on a fresh Debian machine: qemu-img (the
# peer), mkfs.ext4 and debugfs (the disk generator), Debian's awscli (the
# upload peer), qemu-block-extra (qemu-img's curl driver) and nbdkit (its
# curl plugin: KubeVirt CDI's pipeline), the peers of the remote cases;
# for the link cases iproute2 (ip netns, tc) and rclone (a peer uploader).
# versitygw is installed by .ci/versitygw.sh (the link cases start their
# own inside their network namespace, from the same binary).
set -euo pipefail
pkgs=()
command -v qemu-img  >/dev/null || pkgs+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || pkgs+=(e2fsprogs)
command -v debugfs   >/dev/null || pkgs+=(e2fsprogs)
[ -x /usr/bin/aws ]              || pkgs+=(awscli)
command -v nbdkit    >/dev/null || pkgs+=(nbdkit)
# The link cases run as root only (network namespaces); without root
# they are reported as skipped, and need nothing.
if [ "$(id -u)" = 0 ]; then
  command -v ip     >/dev/null || pkgs+=(iproute2)
  command -v tc     >/dev/null || pkgs+=(iproute2)
  command -v rclone >/dev/null || pkgs+=(rclone)
fi
ls /usr/lib/*/qemu/block-curl.so >/dev/null 2>&1 || pkgs+=(qemu-block-extra)
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "bench: please install: ${pkgs[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
