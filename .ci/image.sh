#!/usr/bin/env bash
# CI: build the container image with podman (make image) and run the
# binary inside it: `convert version`, and the demo sample converted to RAW
# into a mounted folder, whose bytes must be qemu-img's. Debian's podman is
# installed when missing. A machine where no container can be built or run
# (no podman to be had, storage or runtime refused) gets one line saying so
# and exit 0: the rest of the suite still runs. A build or a run that fails
# for another reason fails CI.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { echo "image: $*"; }

if ! command -v podman >/dev/null; then
  (apt-get install -y -qq podman >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq podman; } >/dev/null 2>&1) || true
fi
if ! command -v podman >/dev/null; then
  say "podman is not installed and could not be (apt-get install podman): the image was not built"
  exit 0
fi

# Storage: overlay, or vfs (in a root of its own) where overlay is refused.
podman=(podman)
if ! podman info >/dev/null 2>&1; then
  podman=(podman --storage-driver vfs --root /var/lib/containers/storage-vfs)
  if ! "${podman[@]}" info >/dev/null 2>&1; then
    say "podman cannot run here ($(podman info 2>&1 | tail -n 1)): the image was not built"
    exit 0
  fi
fi

version=$(sed -n 's/^\tversion *= *"\(.*\)"/\1/p' cmd/convert/version.go)
tag=convert:$version
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! make image CONTAINER="${podman[*]}" >"$log" 2>&1; then
  if grep -qiE 'permission denied|not permitted|overlay|storage|mount|namespace|cgroup' "$log"; then
    say "podman cannot build here ($(grep -iE 'error' "$log" | tail -n 1)): the image was not built"
    exit 0
  fi
  cat "$log"
  say "make image failed"
  exit 1
fi
tail -n 1 "$log"

# A container runtime that runs here: crun (podman's default), else runc,
# with the default limits, else with limits this machine grants (a
# sandbox without CAP_SYS_RESOURCE refuses to raise them).
limits=(--ulimit "nofile=4096:4096" --ulimit "nproc=4096:4096")
run=()
for rt in "" runc; do
  if [ -n "$rt" ] && ! command -v "$rt" >/dev/null; then
    (apt-get install -y -qq "$rt" >/dev/null 2>&1) || continue
  fi
  for lim in no yes; do
    try=("${podman[@]}")
    [ -n "$rt" ] && try+=(--runtime "$rt")
    try+=(run --rm --network none)
    [ "$lim" = yes ] && try+=("${limits[@]}")
    if out=$("${try[@]}" "$tag" version 2>&1); then
      run=("${try[@]}")
      break 2
    fi
    last=$out
  done
done
if [ ${#run[@]} -eq 0 ]; then
  say "the image $tag was built, but no container can run here ($(echo "${last:-}" | tail -n 1))"
  exit 0
fi
echo "$out" | head -n 1
if ! echo "$out" | grep -q "^convert $version"; then
  say "convert version in the image said: $out"
  exit 1
fi

# The demo conversion inside the image, as its non-root user, into a
# folder of the host; the bytes must be qemu-img's.
out_dir=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$out_dir"' EXIT
chmod 0777 "$out_dir"
if ! "${run[@]}" -v "$PWD/testdata:/data:ro" -v "$out_dir:/out" "$tag" /data/sample.qcow2 -O raw -o /out/sample.raw; then
  say "the demo conversion failed inside the image"
  exit 1
fi
qemu-img convert -O raw testdata/sample.qcow2 "$out_dir/want.raw"
if ! cmp -s "$out_dir/sample.raw" "$out_dir/want.raw"; then
  say "the demo conversion inside the image differs from qemu-img's"
  exit 1
fi
say "$tag built; convert version and the demo conversion ran inside it (its output owned by uid $(stat -c %u "$out_dir/sample.raw"))"
