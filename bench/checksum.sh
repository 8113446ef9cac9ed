#!/usr/bin/env bash
# Benchmark (not a test): `vma checksum` against what it replaces, `vma
# extract` then `sha256sum` of the extracted disks, on the same archives
# (plain and zstd) in the same run; prints each wall time, the ratio and
# the load average (the machine may be shared: read the ratio with it).
#
#   bash bench/checksum.sh
#
# Environment: BENCH_SIZE_MIB (first disk, default 1024; a second disk of
# a quarter of it), BENCH_RUNS (default 3, the median is shown),
# BENCH_DIR (default /var/tmp), VMA (default build/vma).
# Data: bench/gen-image.c's VM-like images (holes, partly zero clusters,
# text), seeded.
set -euo pipefail
export LC_ALL=C
if [ -n "${VMA:-}" ]; then VMA=$(realpath "$VMA"); fi
cd "$(dirname "$0")/.."
repo=$PWD
size=$(( ${BENCH_SIZE_MIB:-1024} << 20 ))
runs=${BENCH_RUNS:-3}
VMA=${VMA:-$repo/build/vma}
[ -x "$VMA" ] || { echo "bench: build vma first (meson compile -C build)" >&2; exit 1; }

tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vma-bench-ck-XXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
cc -O2 -std=c11 -o gen-image "$repo/bench/gen-image.c"
./gen-image vm d0.raw "$size" 1
./gen-image vm d1.raw $((size / 4)) 2
"$VMA" create plain.vma drive-scsi0=d0.raw drive-scsi1=d1.raw
"$VMA" create --compress=zstd zstd.vma.zst drive-scsi0=d0.raw drive-scsi1=d1.raw

# wall CMD...: seconds of wall time (after a sync, so no write-back of
# the step before runs during it).
wall() {
    sync
    local t0=$EPOCHREALTIME
    "$@" >/dev/null
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

extract_and_hash() {
    rm -rf x
    "$VMA" extract "$1" x && (cd x && sha256sum disk-*.raw) && rm -rf x
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
want=$(cd "$tmp" && sha256sum d0.raw d1.raw | awk '{ print $1 }')
got=$("$VMA" checksum plain.vma | awk '{ print $1 }')
[ "$want" = "$got" ] || { echo "bench: checksum differs from sha256sum of the sources" >&2; exit 1; }

printf '%-10s %12s %18s %8s\n' archive 'checksum s' 'extract+sha256 s' ratio
for a in plain.vma zstd.vma.zst; do
    ck='' base=''
    for _ in $(seq "$runs"); do # alternate, so load bursts hit both
        base="$base $(wall extract_and_hash "$a")"
        ck="$ck $(wall "$VMA" checksum "$a")"
    done
    b=$(echo "$base" | median) c=$(echo "$ck" | median)
    printf '%-10s %12s %18s %7.2fx\n' "${a%%.*}" "$c" "$b" "$(awk -v b="$b" -v c="$c" 'BEGIN { print b / c }')"
done
hash_only=''
"$VMA" extract plain.vma x >/dev/null
for _ in $(seq "$runs"); do
    hash_only="$hash_only $(wall bash -c 'cd x && sha256sum disk-*.raw')"
done
echo "sha256sum alone of the extracted files (page cache warm): $(echo "$hash_only" | median) s"
echo "archive sizes: plain $(stat -c %s plain.vma), zstd $(stat -c %s zstd.vma.zst); disks $size + $((size / 4)) bytes"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
