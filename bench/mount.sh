#!/usr/bin/env bash
# Benchmark (not a test) of random access (issue 10): vma mount's index
# pass against verify of the same archive; sequential read of a mounted
# disk (dd bs=1M) against the extracted raw file from the page cache
# (target >= 0.7) and against the same file through a minimal FUSE file
# system (bench/fuse-ceiling.c, what FUSE itself allows); random 4 KiB reads per second through the mount;
# index size per stored cluster and per TiB.
#
#   bash bench/mount.sh
#
# Environment: BENCH_SIZE_MIB (default 1024), BENCH_SEED (1), BENCH_DIR
# (/var/tmp), VMA (default build/vma). Prints the load average with the
# figures: on a busy machine they are only indicative.
set -euo pipefail
export LC_ALL=C
if [ -n "${VMA:-}" ]; then VMA=$(realpath "$VMA"); fi
cd "$(dirname "$0")/.."
repo=$PWD
size_mib=${BENCH_SIZE_MIB:-1024}
seed=${BENCH_SEED:-1}
VMA=${VMA:-$repo/build/vma}
[ -x "$VMA" ] || { meson setup build >/dev/null && meson compile -C build >/dev/null; }

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vma-bench-mount.XXXXXX")
cleanup() {
    mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -u "$work/mnt"
    mountpoint -q "$work/ceil" 2>/dev/null && fusermount3 -u "$work/ceil"
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
cc -O2 -std=c11 -o gen-image "$repo/bench/gen-image.c"
./gen-image vm disk0.raw $((size_mib << 20)) "$seed"
"$VMA" create -c /dev/null vm.vma drive-scsi0=disk0.raw 2>/dev/null ||
    "$VMA" create vm.vma drive-scsi0=disk0.raw
"$VMA" extract vm.vma out >/dev/null
mkdir mnt

now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores; disk of $size_mib MiB, archive $(stat -c %s vm.vma) bytes"

# Index pass (no saved index) against verify; the archive in the page cache for both.
cat vm.vma >/dev/null
t0=$(now); "$VMA" verify vm.vma; t1=$(now)
"$VMA" mount -n vm.vma mnt; t2=$(now)
fusermount3 -u mnt
t3=$(now); "$VMA" mount vm.vma mnt; t4=$(now)     # builds and saves the index
fusermount3 -u mnt
t5=$(now); "$VMA" mount vm.vma mnt; t6=$(now)     # loads the saved index
echo "verify $(secs "$t0" "$t1") s; mount (index pass) $(secs "$t1" "$t2") s; mount + save $(secs "$t3" "$t4") s; mount with a saved index $(secs "$t5" "$t6") s"

# Compressed archives: open (index pass, plus the cache or access points)
# against verify of the same file.
fusermount3 -u mnt
for codec in lzo gzip zstd; do
    "$VMA" create --compress=$codec "vm.$codec" drive-scsi0=disk0.raw 2>/dev/null
    t0=$(now); "$VMA" verify "vm.$codec"; t1=$(now)
    "$VMA" mount -c "$work" "vm.$codec" mnt 2>/dev/null; t2=$(now)
    t3=$(now); dd if=mnt/drive-scsi0.raw of=/dev/null bs=1M status=none; t4=$(now)
    fusermount3 -u mnt
    echo "$codec ($(stat -c %s "vm.$codec") bytes): verify $(secs "$t0" "$t1") s; mount $(secs "$t1" "$t2") s; dd bs=1M from the mount $(awk -v t="$(secs "$t3" "$t4")" -v s="$size_mib" 'BEGIN { printf "%.0f", s / t }') MiB/s"
done
"$VMA" mount vm.vma mnt

# Index size: the saved file holds 12 bytes per cluster with data.
clusters=$(( ($(stat -c %s mnt/drive-scsi0.raw) + 65535) / 65536 ))
idx=$(stat -c %s vm.vma.vmaidx)
awk -v i="$idx" -v c="$clusters" 'BEGIN {
    printf "index file %d bytes for %d clusters (%.2f bytes per cluster of the disk; at most 12 per cluster with data: %.0f MiB per TiB fully stored)\n",
        i, c, i / c, 12 * 16777216 / 1048576 }'

# Sequential: the extracted file from the page cache, the same file
# through the fastest FUSE file system with the mount's settings
# (bench/fuse-ceiling.c: direct I/O, 512 KiB requests, one spliced reply
# per request), then the mount. Three rounds, the best of each.
fusermount3 -u mnt
"$VMA" mount vm.vma mnt
cc -O2 -std=c11 -D_GNU_SOURCE $(pkg-config --cflags fuse3) -o fuse-ceiling \
    "$repo/bench/fuse-ceiling.c" $(pkg-config --libs fuse3)
mkdir ceil
./fuse-ceiling out/disk-drive-scsi0.raw ceil 2>/dev/null &
for _ in $(seq 100); do mountpoint -q ceil && break; sleep 0.05; done
cat out/disk-drive-scsi0.raw >/dev/null
best() { # file: the shortest of three dd bs=1M reads
    local i t0 t1 b=
    for i in 1 2 3; do
        t0=$(now); dd if="$1" of=/dev/null bs=1M status=none; t1=$(now)
        b=$(awk -v a="$(secs "$t0" "$t1")" -v b="$b" 'BEGIN { print (b == "" || a < b) ? a : b }')
    done
    echo "$b"
}
a=$(best out/disk-drive-scsi0.raw)
c=$(best ceil/disk.raw)
b=$(best mnt/drive-scsi0.raw)
fusermount3 -u ceil
awk -v a="$a" -v b="$b" -v c="$c" -v s="$size_mib" 'BEGIN {
    printf "dd bs=1M: extracted file (page cache) %.0f MiB/s; through FUSE at best (fuse-ceiling) %.0f MiB/s; mount %.0f MiB/s\n", s / a, s / c, s / b
    printf "  mount / page cache %.2f (target >= 0.7); FUSE ceiling / page cache %.2f; mount / FUSE ceiling %.2f\n", a / b, a / c, c / b }'

# Random 4 KiB reads through the mount, for 3 seconds, on one thread;
# pages read once stay cached, so each offset is read once.
fusermount3 -u mnt
"$VMA" mount vm.vma mnt
/usr/bin/python3 - mnt/drive-scsi0.raw <<'EOF'
import os, random, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
blocks = size // 4096
random.seed(1)
order = random.sample(range(blocks), min(blocks, 200000))
n = 0
t0 = time.monotonic()
for b in order:
    os.pread(fd, 4096, b * 4096)
    n += 1
    if n % 256 == 0 and time.monotonic() - t0 > 3:
        break
dt = time.monotonic() - t0
print(f"random 4 KiB reads through the mount: {n / dt:.0f}/s ({n} reads, one thread)")
EOF
