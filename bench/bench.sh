#!/usr/bin/env bash
# Benchmark (not a test): vma create / verify / extract, plain and zstd,
# each against a baseline run by this same script on the same files, since
# the machine is shared and noisy; the table gives each step's speed as a
# ratio to its baseline and checks it against the targets of the issue.
#
#   bash bench/bench.sh
#
# Environment:
#   BENCH_SIZE_GIB  size of the main disk image (default 4)
#   BENCH_RUNS      runs per step; the table shows the median (default 3)
#   BENCH_SEED      data generator seed (default 1)
#   BENCH_DIR       parent of the work dir (default /var/tmp); the work dir
#                   is removed at the end
#   VMA             vma binary to use (default: build it at build/vma)
#
# Data (bench/gen-image.c, deterministic for a seed): a VM-like image of
# BENCH_SIZE_GIB GiB, a third holes, a third partly zero 64 KiB clusters,
# a third compressible text; a second 64 MiB disk of the same kind; a
# config file. Then a 1 TiB sparse file with 1 GiB of random data.
#
# Every step is timed (wall, CPU, peak RSS) after a `sync`, so that no
# dirty pages of the step before are written back during it. The steps of
# a group alternate run by run (baseline, step, baseline, step, ...), so
# that a burst of load from other processes hits both alike. Targets are
# checked on wall-time ratios; CPU-time ratios are printed beside them, as
# they say whether a slow step did more work or only got less of the CPUs.
set -euo pipefail
export LC_ALL=C # "." in decimals, for awk and $EPOCHREALTIME
if [ -n "${VMA:-}" ]; then VMA=$(realpath "$VMA"); fi
cd "$(dirname "$0")/.."
repo=$PWD

size_gib=${BENCH_SIZE_GIB:-4}
runs=${BENCH_RUNS:-3}
seed=${BENCH_SEED:-1}
mib=$((1 << 20))
gib=$((1 << 30))
disk0_size=$((size_gib * gib))
disk1_size=$((64 * mib))
img_bytes=$((disk0_size + disk1_size))

# die, find_vma, measure, run_group, median, rss, row
. "$repo/bench/common.sh"

# --- tools -----------------------------------------------------------------

find_vma
for t in zstd cc /usr/bin/time; do
    command -v "$t" >/dev/null || die "$t is missing (bash scripts/deps.sh installs it)"
done

# --- work dir and disk space ----------------------------------------------

parent=${BENCH_DIR:-/var/tmp}
# Peak use: the image's data (2/3) + plain archive (~1/2) + two zstd
# archives (~1/4 each) + one extracted or copied image (~2/3), then the
# 1 TiB test: 1 GiB of data + a 1.2 GiB archive (+ its cp copy, 1 GiB).
need=$((disk0_size * 5 / 2 + 4 * gib))
avail=$(($(df -P -B1 "$parent" | awk 'NR == 2 { print $4 }')))
if [ "$avail" -lt "$need" ]; then
    die "$parent has $((avail / mib)) MiB free, the benchmark needs about $((need / mib)) MiB (set BENCH_DIR or BENCH_SIZE_GIB)"
fi
tmp=$(mktemp -d "$parent/vma-bench-XXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir times

# A private copy of the binary: others may rebuild build/vma during the run.
private_vma
cc -O2 -std=c11 -o gen-image "$repo/bench/gen-image.c"

# --- measuring ---------------------------------------------------------------

# --- data ----------------------------------------------------------------------

sysinfo() {
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ { t = $2 } /MemAvailable/ { a = $2 } END { printf "%.1f GiB RAM (%.1f GiB available)", t / 1048576, a / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)   busiest processes (%cpu over their lifetime):"
    ps -eo pcpu=,comm= --sort=-pcpu | head -n 3 | sed 's/^/    /'
    echo "vma: $VMA ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet HEAD -- lib cli include 2>/dev/null || echo ', with uncommitted changes in lib/cli/include')), zstd $(zstd -V | grep -o 'v[0-9.]*' | head -n 1)"
    echo "work dir: $tmp ($(df -P -h . | awk 'NR == 2 { print $4 }') free); $runs runs per step, seed $seed"
}
echo "== vma benchmark"
sysinfo

echo
echo "== making data"
start=$(date +%s.%N)
./gen-image vm disk0.raw "$disk0_size" "$seed"
./gen-image vm disk1.raw "$disk1_size" "$((seed + 1))"
printf 'boot: order=scsi0\ncores: 2\nmemory: 4096\nname: bench\nscsi0: local:100/vm-100-disk-0.raw,size=%sG\nscsi1: local:100/vm-100-disk-1.raw,size=64M\n' \
    "$size_gib" >qemu-server.conf
echo "disk0.raw: $((disk0_size / mib)) MiB, $(($(du -B1 disk0.raw | cut -f1) / mib)) MiB allocated; disk1.raw: $((disk1_size / mib)) MiB, $(($(du -B1 disk1.raw | cut -f1) / mib)) MiB allocated ($(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s)"

devs=(drive-scsi0=disk0.raw drive-scsi1=disk1.raw)

# --- create --------------------------------------------------------------------
# Plain archive, built-in zstd (level 3, all cores), and the piped form it
# must beat: plain create into `zstd -T2` at the same level. Codec limit:
# zstd -T0 -3 over the images themselves (holes and zero blocks included,
# which vma never hands to the compressor).

step_create() {
    rm -f vm.vma
    measure create "$vma" create vm.vma -c qemu-server.conf "${devs[@]}"
}
step_create_zst() {
    rm -f vm.vma.zst
    measure create_zst "$vma" create --compress=zstd:3 vm.vma.zst -c qemu-server.conf "${devs[@]}"
}
step_create_pipe() {
    rm -f pipe.vma.zst
    measure create_pipe "$vma" create "exec:zstd -q -T2 -3 > pipe.vma.zst" -c qemu-server.conf "${devs[@]}"
}
step_zstd_img() { measure zstd_img sh -c 'zstd -q -T0 -3 -c disk0.raw disk1.raw >/dev/null'; }

echo
echo "== create ($runs runs)"
run_group create create_zst create_pipe zstd_img
"$vma" verify pipe.vma.zst || die "the piped archive does not verify"
rm pipe.vma.zst
vma_bytes=$(stat -c %s vm.vma)
zst_bytes=$(stat -c %s vm.vma.zst)
echo "vm.vma: $((vma_bytes / mib)) MiB; vm.vma.zst: $((zst_bytes / mib)) MiB"

# --- verify (page-cached archives) --------------------------------------------
# The read limit is `cat archive >/dev/null` with the archive in the page
# cache; the codec limit is `zstd -dc archive.zst >/dev/null`.

echo
echo "== verify ($runs runs)"
step_cat() { measure cat sh -c 'cat vm.vma >/dev/null'; }
step_verify() { measure verify "$vma" verify vm.vma; }
step_zstd_dc() { measure zstd_dc sh -c 'zstd -q -dc vm.vma.zst >/dev/null'; }
step_verify_zst() { measure verify_zst "$vma" verify vm.vma.zst; }
step_verify_pipe() { measure verify_pipe sh -c "zstd -q -dc vm.vma.zst | '$vma' verify -"; }

cat vm.vma vm.vma.zst >/dev/null # warm the page cache
# cat and verify alternate; so do zstd -dc and the two zstd verifies
run_group cat verify
run_group zstd_dc verify_zst verify_pipe

# --- extract -------------------------------------------------------------------
# vma extract fsyncs what it wrote before it returns, so the write limit is
# `cp --sparse=always` of the same images followed by a sync of the copies;
# cp without the sync (its data still in the page cache) is shown too.

echo
echo "== extract ($runs runs)"
copy_images() {
    mkdir out
    cp --sparse=always disk0.raw out/disk0.raw
    cp --sparse=always disk1.raw out/disk1.raw
    if [ "${1:-}" = sync ]; then sync out/disk0.raw out/disk1.raw; fi
}
export -f copy_images
step_cp_sync() {
    measure cp_sync bash -c 'copy_images sync'
    rm -rf out
}
step_cp() {
    measure cp bash -c copy_images
    rm -rf out
}
checked=
step_extract() {
    measure extract "$vma" extract vm.vma out
    if [ -z "$checked" ]; then # once: the round trip gives back the same bytes
        if ! cmp disk0.raw out/disk-drive-scsi0.raw || ! cmp disk1.raw out/disk-drive-scsi1.raw; then
            die "extracted disks differ from the images"
        fi
        checked=1
    fi
    rm -rf out
}
step_extract_zst() {
    measure extract_zst "$vma" extract vm.vma.zst out
    rm -rf out
}
run_group cp_sync extract cp extract_zst

# --- 1 TiB sparse ----------------------------------------------------------------
# 16 x 64 MiB of random data spread over 1 TiB of holes: create must skip
# the holes (SEEK_DATA) and still record every cluster; target < 10 s.

echo
echo "== 1 TiB sparse file, 1 GiB of data ($runs runs)"
rm -f disk0.raw disk1.raw vm.vma vm.vma.zst # make room
./gen-image spread sparse.raw $((1 << 40)) "$((seed + 2))" 16 $((64 * mib))
step_cp_1t() {
    measure cp_1t cp --sparse=always sparse.raw sparse.copy
    rm -f sparse.copy
}
step_create_1t() {
    rm -f big.vma
    measure create_1t "$vma" create big.vma drive-scsi0=sparse.raw
}
step_cat_1t() { measure cat_1t sh -c 'cat big.vma >/dev/null'; }
step_verify_1t() { measure verify_1t "$vma" verify big.vma; }
run_group cp_1t create_1t
cat big.vma >/dev/null # warm the page cache
run_group cat_1t verify_1t
big_bytes=$(stat -c %s big.vma)
echo "big.vma: $((big_bytes / mib)) MiB"

# --- table -----------------------------------------------------------------------

echo
echo "== results: wall and CPU (user + system) seconds are medians of $runs runs; peak RSS is the largest over the runs"
echo "MiB/s: img = logical image bytes (both disks, holes included; 1 TiB for *_1t)"
echo "       vma = bytes of the plain VMA stream read (for .zst steps: after decompression)"
echo "ratio = baseline wall time / step wall time (above 1: faster than the baseline); targets apply to it"
echo "CPU r = the same for CPU time: for information, less disturbed by other load (but blind to I/O waits)"
echo
printf "%-12s %8s %7s %9s %-4s %8s  %-12s %6s %6s  %-7s %s\n" step "wall s" "CPU s" "MiB/s" "" "RSS MiB" baseline ratio "CPU r" target result
echo "-- baselines"
row cp "$img_bytes" img "" ""
row cp_sync "$img_bytes" img "" ""
row zstd_img "$img_bytes" img "" ""
row cat "$vma_bytes" vma "" ""
row zstd_dc "$vma_bytes" vma "" ""
echo "-- create"
row create "$img_bytes" img cp ""
row create_zst "$img_bytes" img zstd_img ""
row create_pipe "$img_bytes" img zstd_img ""
row create_zst "$img_bytes" img create_pipe ">=1.0"
echo "-- verify"
row verify "$vma_bytes" vma cat ">=0.7"
row verify_zst "$vma_bytes" vma zstd_dc ">=0.909"
row verify_zst "$vma_bytes" vma verify_pipe ">1.0"
row verify_pipe "$vma_bytes" vma zstd_dc ""
echo "-- extract"
row extract "$img_bytes" img cp_sync ">=0.7"
row extract "$img_bytes" img cp ""
row extract_zst "$img_bytes" img cp_sync ""
echo "-- 1 TiB sparse, 1 GiB data"
row cp_1t $((1 << 40)) img "" ""
row create_1t $((1 << 40)) img cp_1t "<10s"
row cat_1t "$big_bytes" vma "" ""
row verify_1t "$big_bytes" vma cat_1t ""
echo
cat <<EOF
targets: verify >= 0.7 x cat (page-cached plain archive); verify .vma.zst in
<= 1.1 x the time of zstd -dc (ratio >= 0.909) and faster than the pipe
form zstd -dc | vma verify -; extract >= 0.7 x cp --sparse=always + sync
(the baseline syncs because vma extract fsyncs its output before it
returns; plain cp leaves its data dirty in the page cache); create of 1 TiB
sparse with 1 GiB of data < 10 s; create --compress=zstd:3 at least as fast
as create piped into zstd -T2 -3.
sizes: image $((img_bytes / mib)) MiB, vm.vma $((vma_bytes / mib)) MiB, vm.vma.zst $((zst_bytes / mib)) MiB, big.vma $((big_bytes / mib)) MiB
load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
EOF
echo "targets met: $met of $total"
