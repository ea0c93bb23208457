#!/usr/bin/env bash
# Installs what `make bench` needs on a fresh Debian machine: qemu-img (the
# peer), mkfs.ext4 and debugfs (the disk generator), Debian's awscli (the
# upload peer). versitygw is installed by .ci/versitygw.sh.
set -euo pipefail
pkgs=()
command -v qemu-img  >/dev/null || pkgs+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || pkgs+=(e2fsprogs)
command -v debugfs   >/dev/null || pkgs+=(e2fsprogs)
[ -x /usr/bin/aws ]              || pkgs+=(awscli)
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "bench: please install: ${pkgs[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
