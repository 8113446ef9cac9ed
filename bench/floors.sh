#!/usr/bin/env bash
# The speed floors (issue 19), each a ratio of two commands timed pair by
# pair in this run on the same generated files, so that a noisy shared
# machine moves both sides alike. A benchmark, not a test: run it on a
# quiet machine, before and after any change to a hot path (reader loop,
# input layer, codecs, restore, writer), and put its output in the note.
#
#   bash bench/floors.sh [--check] [--size MiB] [--runs N] [DEPLOYED_VMA]
#
#   --size MiB     the generated disk (default 1024; also run it at 270)
#   --runs N       timed pairs per measure (default 7); the median counts
#   --check        exit 1 when a floor is missed
#   DEPLOYED_VMA   Proxmox's own vma, for the floor against it (else that
#                  row says "not measured")
#   VMA=<path>     another build of ours (default: build/vma, built)
#
# Data: bench/gen-image.c's VM-like disk (a third holes, a third partly
# zero 4 KiB blocks, a third text), its plain archive, a single-frame
# .vma.zst (`zstd -3` of the plain one, as Proxmox writes it) and a
# seekable .vma.zst (create --compress=zstd). Page cache warm: every file
# is read once before the pairs. Each line: the measure, the median
# ratio (higher is better for ours unless marked), min-max, the floor.
# SPDX-License-Identifier: MIT
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "$0")/.." && pwd)
check=0 size_mib=1024 runs=7 ref=
while [ $# -gt 0 ]; do
    case $1 in
    --check) check=1 ;;
    --size) size_mib=$2; shift ;;
    --runs) runs=$2; shift ;;
    -*) echo "usage: $0 [--check] [--size MiB] [--runs N] [DEPLOYED_VMA]" >&2; exit 2 ;;
    *) ref=$(realpath "$1") ;;
    esac
    shift
done
cd "$repo"
# shellcheck source=bench/common.sh
source bench/common.sh
find_vma
vma=$(realpath "$VMA")
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vma-floors.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

mib=$((1 << 20))
size=$((size_mib * mib))
cc -O2 -std=c11 -o gen-image "$repo/bench/gen-image.c"
./gen-image vm disk.raw "$size" 1
"$vma" create a.vma drive-scsi0=disk.raw
zstd -q -3 -T1 -c a.vma >single.vma.zst
"$vma" create --compress=zstd seek.vma.zst drive-scsi0=disk.raw
qemu-img convert -O qcow2 disk.raw disk.qcow2 2>/dev/null || true
cat disk.raw a.vma single.vma.zst seek.vma.zst >/dev/null
echo "floors.sh: disk $size_mib MiB; a.vma $(($(stat -c %s a.vma) / mib)) MiB," \
    "single.vma.zst $(($(stat -c %s single.vma.zst) / mib)) MiB," \
    "seek.vma.zst $(($(stat -c %s seek.vma.zst) / mib)) MiB; $runs pairs each"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# secs CMD...: wall seconds of one run (output discarded).
secs() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1 || { echo "floors.sh: failed: $*" >&2; exit 1; }
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.4f\n", b - a }'
}

# pair NAME PREP_OURS 'OURS' PREP_OTHER 'OTHER': $runs pairs after a
# warm-up (which side goes first alternates), each command string run by
# bash after its prep string; the ratio time(OTHER) / time(OURS) of each
# pair (higher: ours faster) goes to ratios/NAME with both times.
mkdir -p ratios
pair() {
    local name=$1 prep_a=$2 a=$3 prep_b=$4 b=$5 i ta tb
    : >"ratios/$name"
    for ((i = 0; i <= runs; i++)); do
        if ((i % 2)); then
            eval "$prep_b"; tb=$(secs bash -c "$b")
            eval "$prep_a"; ta=$(secs bash -c "$a")
        else
            eval "$prep_a"; ta=$(secs bash -c "$a")
            eval "$prep_b"; tb=$(secs bash -c "$b")
        fi
        ((i == 0)) && continue # warm-up
        awk -v a="$ta" -v b="$tb" 'BEGIN { printf "%.4f %s %s\n", b / a, a, b }' >>"ratios/$name"
    done
}

missed=0
# row NAME LABEL OP FLOOR: the median of ratios/NAME against the floor
# (OP ge: at least, le: at most).
row() {
    local name=$1 label=$2 op=$3 floor=$4 med lo hi ok
    read -r med lo hi < <(sort -n "ratios/$name" | awk '{ r[NR] = $1 } END {
        printf "%.3f %.3f %.3f\n", r[int((NR + 1) / 2)], r[1], r[NR] }')
    if [ "$op" = ge ]; then
        ok=$(awk -v m="$med" -v f="$floor" 'BEGIN { print (m >= f) ? "ok" : "MISSED" }')
        printf '%-58s %6s  (%s-%s)  >= %s  %s\n' "$label" "$med" "$lo" "$hi" "$floor" "$ok"
    else
        ok=$(awk -v m="$med" -v f="$floor" 'BEGIN { print (m <= f) ? "ok" : "MISSED" }')
        printf '%-58s %6s  (%s-%s)  <= %s  %s\n' "$label" "$med" "$lo" "$hi" "$floor" "$ok"
    fi
    [ "$ok" = ok ] || missed=$((missed + 1))
}

V=$vma
pair verify_cat '' "$V verify a.vma" '' "cat a.vma >/dev/null"
if [ -n "$ref" ]; then
    pair verify_ref '' "$V verify a.vma" '' "$ref verify a.vma"
fi
pair zst_single '' "$V verify single.vma.zst" '' "zstd -q -dc single.vma.zst >/dev/null"
pair zst_seek '' "$V verify seek.vma.zst" '' "zstd -q -T1 -dc seek.vma.zst >/dev/null"
pair extract 'rm -rf x; rm -f c.raw' "$V extract a.vma x && sync x/disk-drive-scsi0.raw" \
    'rm -rf x; rm -f c.raw' "cp --sparse=always disk.raw c.raw && sync c.raw"
new_target='rm -rf r t.qcow2 o.qcow2; qemu-img create -q -f qcow2 -o preallocation=metadata t.qcow2 '$size'; echo "format=qcow2:0:drive-scsi0=$PWD/t.qcow2" >map'
pair qcow2 "$new_target" "$V extract -r map a.vma r" \
    "$new_target" "qemu-img convert -O qcow2 disk.raw o.qcow2 && sync o.qcow2"
"$V" extract a.vma xs >/dev/null
pair checksum '' "$V checksum a.vma" '' "sha256sum xs/disk-drive-scsi0.raw"
rm -rf x xs r c.raw t.qcow2 o.qcow2

# The 1 TiB sparse create: 16 chunks of 64 MiB spread over 1 TiB.
./gen-image spread sparse.raw $((1 << 40)) 3 16 $((64 * mib))
cat sparse.raw >/dev/null 2>&1 || true
: >ratios/sparse
for ((i = 0; i < 3; i++)); do
    rm -f s.vma
    secs "$V" create s.vma drive-scsi0=sparse.raw >>ratios/sparse
done
rm -f s.vma sparse.raw

echo
printf '%-58s %6s  %-13s  %s\n' "measure (ratio: the other command's time / ours)" median min-max floor
row verify_cat "plain verify, against cat" ge 0.9
if [ -n "$ref" ]; then
    row verify_ref "plain verify, against the deployed vma" ge 1.3
else
    echo "plain verify, against the deployed vma                      not measured (no DEPLOYED_VMA given)"
fi
# Our time at most 1.1 x zstd's: the ratio at least 1 / 1.1.
row zst_single "single-frame .zst verify against zstd -dc (ours <= 1.1x)" ge 0.91
row zst_seek "seekable .zst verify (2 cores) against zstd -T1 -dc" ge 1.7
row extract "extract against cp --sparse=always + sync" ge 1.0
row qcow2 "restore into qcow2 against qemu-img convert -O qcow2" ge 0.8
row checksum "vma checksum against sha256sum of the extracted disk" ge 1.0
read -r smed < <(sort -n ratios/sparse | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] }')
sok=$(awk -v m="$smed" 'BEGIN { print (m < 5) ? "ok" : "MISSED" }')
printf '%-58s %6ss %-13s  < 5 s  %s\n' "1 TiB sparse create (seconds, median of 3)" "$smed" "" "$sok"
[ "$sok" = ok ] || missed=$((missed + 1))
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$check" = 1 ] && [ "$missed" -gt 0 ]; then
    echo "floors.sh: $missed floor(s) missed"
    exit 1
fi
exit 0
