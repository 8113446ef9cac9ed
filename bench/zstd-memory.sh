#!/usr/bin/env bash
# Benchmark (not a test): peak RSS and archive size of
# `vma create --compress=zstd:<level>` on a 256 MiB VM-like image
# (bench/gen-image.c, seed 1), for the README's table. Levels as arguments
# (default 1 3 9 19 22; 19 and 22 take minutes on 2 cores). The worker
# count is min(cores, cap): on a host with fewer cores than the cap, the
# figures are below the bound. Work files under $BENCH_DIR (/var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# VMA=<binary>, else build/vma as it is (build it first).
vma=$(realpath "${VMA:-build/vma}")
[ -x "$vma" ] || { echo "zstd-memory.sh: no $vma: meson compile -C build, or set VMA" >&2; exit 1; }

tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vma-zstdmem.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cc -O2 -std=c11 -o "$tmp/gen-image" "$repo/bench/gen-image.c"
"$tmp/gen-image" vm "$tmp/img.raw" $((256 << 20)) 1
echo "cores: $(nproc); $(uptime)"
printf '%-6s %12s %10s %14s\n' level "peak RSS KB" seconds "archive bytes"
for level in "${@:-1 3 9 19 22}"; do
    for l in $level; do
        rm -f "$tmp/o.zst"
        /usr/bin/time -f '%M %e' -o "$tmp/t" "$vma" create --compress=zstd:$l "$tmp/o.zst" \
            drive-scsi0="$tmp/img.raw"
        read -r rss secs <"$tmp/t"
        printf '%-6s %12s %10s %14s\n' "$l" "$rss" "$secs" "$(stat -c %s "$tmp/o.zst")"
    done
done
