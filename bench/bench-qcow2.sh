#!/usr/bin/env bash
# Benchmark (not a test): restore into qcow2 and back up from qcow2 through
# qemu-nbd, each against a baseline measured by this same script on the
# same files (the machine is shared and noisy):
#   restore  vma extract -r <map> with format=qcow2:0:drive-scsi0=<path>
#            into a qcow2 pre-created as Proxmox does (qemu-img create
#            -o preallocation=metadata), against qemu-img convert -O qcow2
#            of the raw image (the format's write limit); target >= 0.8x;
#            and against nbdcopy of the raw image into the same kind of
#            target through qemu-nbd (what any NBD client gets)
#   create   vma create -d format=qcow2:drive-scsi0=<qcow2>, against
#            qemu-img convert -O raw of the qcow2 and nbdcopy of it to
#            null: (reading it through qemu-nbd, the read limit)
# Given the path of a reference vma (the deployed Proxmox one, which links
# QEMU's block layer), its restore and create of the same files are
# measured the same way and compared too.
#
#   bash bench/bench-qcow2.sh [REFERENCE_VMA]
#
# Environment:
#   BENCH_SIZE   size of the disk image, bytes or with an IEC suffix (4G,
#                512M; default 4G)
#   BENCH_RUNS   runs per step; the table shows the median (default 3)
#   BENCH_SEED   data generator seed (default 1)
#   BENCH_DIR    parent of the work dir (default /var/tmp), removed at the end
#   VMA          vma binary to use (default: build it at build/vma)
#
# Data: bench/gen-image.c's VM-like image (a third holes, a third partly
# zero 64 KiB clusters, a third compressible text), its plain archive and a
# qcow2 copy. Each vma step runs qemu-nbd through a wrapper that records
# qemu-nbd's own CPU time, so that the table can say how the CPU time of a
# step splits between vma and qemu-nbd.
set -euo pipefail
export LC_ALL=C
if [ -n "${VMA:-}" ]; then VMA=$(realpath "$VMA"); fi
ref=${1:-}
if [ -n "$ref" ]; then
    ref=$(realpath "$ref")
    [ -x "$ref" ] || { echo "bench: $ref is not executable" >&2; exit 1; }
fi
cd "$(dirname "$0")/.."
repo=$PWD

size=$(numfmt --from=iec "${BENCH_SIZE:-4G}")
runs=${BENCH_RUNS:-3}
seed=${BENCH_SEED:-1}
mib=$((1 << 20))

# die, find_vma, measure, run_group, median, rss, row
. "$repo/bench/common.sh"

find_vma
for t in qemu-img qemu-nbd nbdcopy cc /usr/bin/time numfmt; do
    command -v "$t" >/dev/null || die "$t is missing (bash scripts/deps.sh installs it)"
done

# Peak use: the image's data (2/3), its archive (~1/2), its qcow2 (~2/3),
# one restored qcow2 (~2/3) and one converted or created copy (~2/3).
parent=${BENCH_DIR:-/var/tmp}
need=$((size * 7 / 2 + 256 * mib))
avail=$(($(df -P -B1 "$parent" | awk 'NR == 2 { print $4 }')))
[ "$avail" -ge "$need" ] ||
    die "$parent has $((avail / mib)) MiB free, the benchmark needs about $((need / mib)) MiB (set BENCH_DIR or BENCH_SIZE)"
tmp=$(mktemp -d "$parent/vma-bench-qcow2-XXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir times bin

# A private copy of the binary: others may rebuild build/vma during the run.
private_vma
cc -O2 -std=c11 -o gen-image "$repo/bench/gen-image.c"

# qemu-nbd wrapper: appends qemu-nbd's user + system CPU seconds to
# qemu-nbd.cpu. vma starts qemu-nbd by socket activation, which names the
# pid that owns the socket (LISTEN_PID): the inner bash sets it to its own
# pid, which qemu-nbd keeps through exec.
real_qemu_nbd=$(command -v qemu-nbd)
cat >bin/qemu-nbd <<EOF
#!/bin/bash
exec /usr/bin/time -a -o "$tmp/qemu-nbd.cpu" -f '%U %S' /bin/bash -c 'export LISTEN_PID=\$\$; exec "\$0" "\$@"' "$real_qemu_nbd" "\$@"
EOF
chmod +x bin/qemu-nbd
export PATH=$tmp/bin:$PATH

# measure_nbd NAME CMD...: measure, and record the CPU time of the
# qemu-nbd processes CMD started in times/NAME.nbd (as "0 0 cpu_s").
measure_nbd() {
    : >qemu-nbd.cpu
    measure "$@"
    awk '{ c += $1 + $2 } END { printf "0 0 %.2f\n", c }' qemu-nbd.cpu >>"times/$1.nbd"
}

echo "== vma qcow2 benchmark"
echo "machine: $(nproc) cores, kernel $(uname -r); $(qemu-img --version | head -n 1)"
echo "uptime: $(uptime)"
echo "vma: $VMA ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'))${ref:+; reference: $ref}"
echo "work dir: $tmp; $runs runs per step, seed $seed"

echo
echo "== making data"
./gen-image vm disk0.raw "$size" "$seed"
"$vma" create vm.vma drive-scsi0=disk0.raw
qemu-img convert -O qcow2 disk0.raw disk0.qcow2
echo "disk0.raw: $((size / mib)) MiB, $(($(du -B1 disk0.raw | cut -f1) / mib)) MiB allocated;" \
    "vm.vma $(($(stat -c %s vm.vma) / mib)) MiB; disk0.qcow2 $(($(stat -c %s disk0.qcow2) / mib)) MiB"

# --- restore into qcow2 --------------------------------------------------------
# Every run writes a new target; vma flushes it (qemu-nbd fsyncs), and the
# baseline syncs its output, so both include getting the data to disk.

new_target() {
    rm -rf out target.qcow2
    qemu-img create -q -f qcow2 -o preallocation=metadata target.qcow2 "$size"
    echo "format=qcow2:0:drive-scsi0=$tmp/target.qcow2" >map
}
step_convert_qcow2() {
    rm -f out.qcow2
    measure convert_qcow2 sh -c 'qemu-img convert -O qcow2 disk0.raw out.qcow2 && sync out.qcow2'
    rm -f out.qcow2
}
checked=
step_restore() {
    new_target
    measure_nbd restore "$vma" extract -r map vm.vma out
    if [ -z "$checked" ]; then # once: the restored image is the same disk
        qemu-img compare -q -f raw -F qcow2 disk0.raw target.qcow2 || die "the restored qcow2 differs from the image"
        checked=1
    fi
}
step_nbdcopy_qcow2() {
    new_target
    measure nbdcopy_qcow2 nbdcopy --target-is-zero --flush disk0.raw -- \
        [ "$real_qemu_nbd" -f qcow2 --cache=writeback "$tmp/target.qcow2" ]
}
step_restore_ref() {
    new_target
    measure restore_ref "$ref" extract -r map vm.vma out
}

echo
echo "== restore into qcow2 ($runs runs)"
if [ -n "$ref" ]; then
    run_group convert_qcow2 restore nbdcopy_qcow2 restore_ref
else
    run_group convert_qcow2 restore nbdcopy_qcow2
fi
rm -rf out target.qcow2

# --- create from qcow2 ------------------------------------------------------------

step_convert_raw() {
    measure convert_raw qemu-img convert -O raw disk0.qcow2 out.raw
    rm -f out.raw
}
step_read_nbd() { measure read_nbd nbdcopy -- [ "$real_qemu_nbd" -r -f qcow2 disk0.qcow2 ] null:; }
step_create() {
    rm -f out.vma
    measure_nbd create "$vma" create out.vma -d format=qcow2:drive-scsi0=disk0.qcow2
}
step_create_ref() {
    rm -f out.vma
    # the deployed tool guesses the format
    measure create_ref "$ref" create out.vma drive-scsi0=disk0.qcow2
}

echo
echo "== create from qcow2 ($runs runs)"
if [ -n "$ref" ]; then run_group convert_raw read_nbd create create_ref; else run_group convert_raw read_nbd create; fi
"$vma" verify out.vma || die "the archive made from the qcow2 does not verify"
rm -f out.vma

# --- table -------------------------------------------------------------------------

echo
echo "== results: wall and CPU (user + system, children included) seconds are medians of $runs runs"
echo "MiB/s over the image's logical size ($((size / mib)) MiB, holes included); ratio = baseline time / step time"
echo
printf "%-12s %8s %7s %9s %-4s %8s  %-12s %6s %6s  %-7s %s\n" step "wall s" "CPU s" "MiB/s" "" "RSS MiB" baseline ratio "CPU r" target result
echo "-- restore into qcow2"
row convert_qcow2 "$size" img "" ""
row nbdcopy_qcow2 "$size" img "" ""
row restore "$size" img convert_qcow2 ">=0.8"
row restore "$size" img nbdcopy_qcow2 ""
if [ -n "$ref" ]; then
    row restore_ref "$size" img convert_qcow2 ""
    row restore "$size" img restore_ref ""
fi
echo "-- create from qcow2"
row convert_raw "$size" img "" ""
row read_nbd "$size" img "" ""
row create "$size" img convert_raw ""
row create "$size" img read_nbd ""
if [ -n "$ref" ]; then
    row create_ref "$size" img convert_raw ""
    row create "$size" img create_ref ""
fi
echo
echo "where the CPU time of the vma steps goes (medians):"
for s in restore create; do
    awk -v s="$s" -v t="$(median "$s" 3)" -v q="$(median "$s.nbd" 3)" 'BEGIN {
        printf "  %-8s %6.2f s: qemu-nbd %6.2f s, vma %6.2f s\n", s, t, q, t - q }'
done
echo
echo "target: restore into qcow2 >= 0.8 x qemu-img convert -O qcow2 of the raw image"
echo "uptime at the end: $(uptime)"
echo "targets met: $met of $total"
