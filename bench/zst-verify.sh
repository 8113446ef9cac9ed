#!/usr/bin/env bash
# Benchmark (not a test): `vma verify` of our own seekable .vma.zst (frames
# decoded on every core, lib/zst_pool.c) against single-threaded
# `zstd -dc` of the same file, median of 3 each; the target is a ratio
# of at least 1.7. Also `vma verify -` (the one-thread stream, through a
# pipe) for comparison. SIZE (MiB, default 512) of a VM-like image from
# bench/gen-image.c; work files under $BENCH_DIR (/var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
vma=$(realpath "${VMA:-build/vma}")
[ -x "$vma" ] || { echo "zst-verify.sh: no $vma: meson compile -C build, or set VMA" >&2; exit 1; }
size_mib=${SIZE:-512}
tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vma-zstverify.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cc -O2 -std=c11 -o "$tmp/gen-image" "$repo/bench/gen-image.c"
"$tmp/gen-image" vm "$tmp/img.raw" $((size_mib << 20)) 1
"$vma" create --compress=zstd:3 "$tmp/a.vma.zst" drive-scsi0="$tmp/img.raw"
plain=$(zstd -q -dc "$tmp/a.vma.zst" | wc -c)
median() { # median CMD...: wall seconds, median of 3
    local t i
    for i in 1 2 3; do
        /usr/bin/time -f %e -o "$tmp/t" "$@" >/dev/null
        cat "$tmp/t"
    done | sort -n | sed -n 2p
}
echo "cores: $(nproc); $(uptime)"
z=$(median sh -c "zstd -q -dc '$tmp/a.vma.zst'")
v=$(median "$vma" verify "$tmp/a.vma.zst")
p=$(median sh -c "cat '$tmp/a.vma.zst' | '$vma' verify -")
echo "after: $(uptime)"
mbs() { awk -v b="$plain" -v s="$1" 'BEGIN { printf "%.0f MB/s", b / s / 1e6 }'; }
echo "archive: $plain bytes decompressed, $(stat -c %s "$tmp/a.vma.zst") compressed"
echo "zstd -dc (1 thread):     $z s  $(mbs "$z")"
echo "vma verify (frame pool): $v s  $(mbs "$v")"
echo "vma verify - (stream):   $p s  $(mbs "$p")"
awk -v z="$z" -v v="$v" 'BEGIN { printf "ratio verify/zstd -dc throughput: %.2f (target 1.7)\n", z / v }'
