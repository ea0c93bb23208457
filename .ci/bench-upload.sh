#!/usr/bin/env bash
# Measures, in one run against the same local versitygw:
#   A: convert SRC -O raw -o s3://...            (one pass, zeros copied server-side)
#   B: qemu-img convert -O raw SRC file && aws s3 cp file s3://...
# on a sparse disk (default 6 GiB virtual, ~1 GiB of data, QCOW2 source).
# Needs: go, qemu-img, sfdisk, Debian's awscli (/usr/bin/aws), and the env of
# .ci/versitygw.sh (eval "$(.ci/versitygw.sh)").
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONVERT_TEST_S3_ENDPOINT:?run eval \"\$(.ci/versitygw.sh)\" first}"
virt_mib=${BENCH_VIRTUAL_MIB:-6144}
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-upload.XXXXXX")
trap 'rm -rf "$work"' EXIT
aws=${AWS_CLI:-/usr/bin/aws}
ep=$CONVERT_TEST_S3_ENDPOINT
# Both sides use the same part size. versitygw's posix backend on ext4
# keeps the part list of an upload in an extended attribute, which
# overflows (ENOSPC at Complete) beyond a few hundred parts: keep under it.
part=${BENCH_PART_SIZE:-32M}
fmt=${BENCH_FORMAT:-raw} # raw or qcow2: the output format of both sides
printf '[default]\ns3 =\n  multipart_chunksize = %sB\n  multipart_threshold = %sB\n  max_concurrent_requests = 10\n' "$part" "$part" >"$work/aws-config"
export AWS_CONFIG_FILE=$work/aws-config

go build -o "$work/convert" ./cmd/convert
raw=$work/src.raw
truncate -s "${virt_mib}M" "$raw"
# ~1 GiB of data in runs spread over the disk, plus a few scattered blocks.
for spec in 1:300 900:250 2000:200 3500:200 5000:74; do
	off=${spec%%:*} n=${spec##*:}
	[ "$off" -lt "$virt_mib" ] || continue
	head -c "${n}M" /dev/urandom | dd of="$raw" bs=1M seek="$off" conv=notrunc status=none
done
for off in 1500 2600 4100; do
	head -c 4096 /dev/urandom | dd of="$raw" bs=4096 seek=$((off * 256 + 3)) conv=notrunc status=none
done
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$raw"
src=$work/src.qcow2
qemu-img convert -O qcow2 "$raw" "$src"
rm -f "$raw"
bucket=bench-$RANDOM$RANDOM
AWS_ENDPOINT_URL=$ep "$aws" --endpoint-url "$ep" s3 mb "s3://$bucket" >/dev/null
sync

now() { date +%s.%N; }
t0=$(now)
/usr/bin/time -f '%M %U %S' -o "$work/rss" "$work/convert" "$src" -O "$fmt" -o "s3://$bucket/a.$fmt" --endpoint "$ep" --part-size "$part" --upload-concurrency "${BENCH_K:-8}" --progress never --check warn --json >"$work/a.json"
t1=$(now)
/usr/bin/time -f '%U %S' -o "$work/cpu-b1" qemu-img convert -O "$fmt" "$src" "$work/b.$fmt"
t2=$(now)
/usr/bin/time -f '%U %S' -o "$work/cpu-b2" "$aws" --endpoint-url "$ep" s3 cp "$work/b.$fmt" "s3://$bucket/b.$fmt" --only-show-errors
t3=$(now)

a=$(echo "$t1 - $t0" | bc)
b1=$(echo "$t2 - $t1" | bc)
b2=$(echo "$t3 - $t2" | bc)
b=$(echo "$t3 - $t1" | bc)
echo "source: $(qemu-img info "$src" | grep -E 'virtual size|disk size' | tr '\n' ' ')"
read -r rss ua sa <"$work/rss"
echo "convert -> s3:               ${a}s  (peak RSS $((rss / 1024)) MiB, CPU ${ua}s user ${sa}s sys)"
echo "output format:               $fmt"
echo "qemu-img convert:            ${b1}s"
echo "aws s3 cp:                   ${b2}s  (CPU $(cat "$work/cpu-b2"), qemu-img CPU $(cat "$work/cpu-b1"), user sys)"
echo "qemu-img + aws s3 cp:        ${b}s"
echo "ratio:                       $(echo "scale=2; $b / $a" | bc)x"
grep -E '"(parts|parts_sent|parts_copied|bytes_sent|data)"' "$work/a.json" | tr -d ' ,' | tr '\n' ' '; echo
sa=$("$aws" --endpoint-url "$ep" s3 cp "s3://$bucket/a.$fmt" - | sha256sum | cut -c1-64)
if [ "$fmt" = raw ]; then
	sb=$(sha256sum "$work/b.raw" | cut -c1-64)
else
	# QCOW2 files differ in layout: compare what the guest sees.
	"$aws" --endpoint-url "$ep" s3 cp "s3://$bucket/a.$fmt" "$work/a.$fmt" --only-show-errors
	qemu-img compare -q "$work/a.$fmt" "$work/b.$fmt" && sb=$sa || sb=differs
fi
echo "sha256 object a: $sa"
echo "sha256 file b:   $sb"
[ "$sa" = "$sb" ] && echo "same bytes (qcow2: same guest content)" || { echo "BYTES DIFFER"; exit 1; }
