#!/usr/bin/env bash
# Benchmark (not a test): round trip of a 4 GiB sparse disk, half data
# (deterministic pseudo-random, 64 MiB regions) and half holes, through
# vma create / verify / extract, against cp --sparse=always and cat.
# Work files go to a temp dir under $BENCH_DIR (default /var/tmp); needs
# about 8 GiB free there. Files are read with a warm page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# VMA=<binary> uses that binary as it is; else build/vma is built.
if [ -n "${VMA:-}" ]; then
    vma=$(realpath "$VMA")
else
    bash scripts/deps.sh
    [ -d build/meson-private ] || meson setup build
    ninja -C build vma
    vma=$repo/build/vma
fi

tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vma-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

size=$((4 << 30))
region=$((64 << 20))
echo "making disk.raw: 4 GiB, 64 MiB data / 64 MiB hole regions, in $tmp"
truncate -s $size disk.raw
for ((i = 0; i < size / region; i += 2)); do
    head -c $region /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' $((i + 1)))" \
            -iv 00000000000000000000000000000000 |
        dd of=disk.raw bs=1M seek=$((i * 64)) conv=notrunc status=none
done
echo "disk.raw: $(du -k disk.raw | cut -f1) KiB allocated of $((size >> 10)) KiB"

# measure <name> <cmd...>: run, record "wall s  rss KiB" in times/<name>
mkdir times
measure() {
    local name=$1
    shift
    sync  # start each step with no dirty pages of the step before
    /usr/bin/time -f '%e %M' -o "times/$name" "$@"
}

measure cp cp --sparse=always disk.raw copy.raw
rm copy.raw
measure create "$vma" create vm.vma drive-scsi0=disk.raw
measure cat sh -c 'cat vm.vma > /dev/null'
measure verify "$vma" verify vm.vma
measure extract "$vma" extract vm.vma out >/dev/null
cmp disk.raw out/disk-drive-scsi0.raw
echo "extracted disk: same as disk.raw"
echo "archive: $(stat -c %s vm.vma) bytes"
echo

t() { cut -d' ' -f1 "times/$1"; }
m() { cut -d' ' -f2 "times/$1"; }
row() { # row <name> <baseline-name>
    awk -v n="$1" -v s="$(t "$1")" -v k="$(m "$1")" -v b="$(t "$2")" -v bn="$2" -v sz=$size 'BEGIN {
        mibs = s > 0 ? sz / 1048576 / s : 0
        ratio = b > 0 ? s / b : 0
        printf "%-12s %9.2f %12d %12.0f %10.2fx %s\n", n, s, k, mibs, ratio, bn
    }'
}
printf "%-12s %9s %12s %12s %11s %s\n" step "wall s" "peak KiB" "disk MiB/s" "time ratio" "baseline"
row cp cp
row create cp
row cat cat
row verify cat
row extract cp
