#!/usr/bin/env bash
# The demo: back up a small VM (a real ext4 disk, a second odd-sized disk
# and a config) into a VMA archive with build/vma, list, verify and extract
# it, and check that everything came back byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bash scripts/deps.sh
[ -d build/meson-private ] || meson setup build
ninja -C build vma
vma=$repo/build/vma

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# vma mount keeps its index in the user's cache: the demo's goes with it.
export XDG_CACHE_HOME=$tmp/cache

# Deterministic pseudo-random bytes: gen <seed-hex> <count>
gen() {
    head -c "$2" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K "$1" -iv 00000000000000000000000000000000
}

# run <cmd...>: show the command (program by its base name), then run it.
run() {
    local shown=() a
    for a in "${@:2}"; do
        [[ $a == *' '* ]] && a="'$a'"
        shown+=("$a")
    done
    echo "\$ ${1##*/} ${shown[*]}"
    "$@"
}

echo "== making the VM in $tmp"
mkdir -p tree/etc tree/data tree/docs
echo "Hello from the libvma demo." > tree/hello.txt
echo "demo-vm" > tree/etc/hostname
seq 1 2000 | sed 's/^/line /' > tree/docs/lines.txt
gen 000102030405060708090a0b0c0d0e0f $((3 * 1024 * 1024)) > tree/data/random.bin
truncate -s 64M disk0.raw
mkfs.ext4 -q -F -d tree disk0.raw

# 1 MiB + 1536 bytes (not a multiple of 4 KiB): data at the start, a hole,
# then data in the last partial 4 KiB block.
truncate -s $((1024 * 1024 + 1536)) disk1.raw
gen f0e0d0c0b0a090807060504030201000 $((64 * 1024)) | dd of=disk1.raw conv=notrunc status=none
echo "tail of disk1" | dd of=disk1.raw bs=1 seek=$((1024 * 1024 + 100)) conv=notrunc status=none

cat > qemu-server.conf <<'CONF'
boot: order=scsi0
cores: 2
memory: 2048
name: demo
net0: virtio=BC:24:11:00:00:01,bridge=vmbr0
ostype: l26
scsi0: local-lvm:vm-100-disk-0,size=64M
scsi1: local-lvm:vm-100-disk-1,size=1025536
scsihw: virtio-scsi-pci
CONF
ls -ls disk0.raw disk1.raw qemu-server.conf

echo
echo "== backup, list, verify, restore"
run "$vma" create vm.vma -v -c qemu-server.conf drive-scsi0=disk0.raw drive-scsi1=disk1.raw
ls -l vm.vma
run "$vma" list vm.vma
run "$vma" verify -v vm.vma
run "$vma" extract -v vm.vma out
ls -ls out

echo
echo "== the same backup, zstd-compressed; read directly and by zstd itself"
run "$vma" create vm.vma.zst --compress=zstd -c qemu-server.conf drive-scsi0=disk0.raw drive-scsi1=disk1.raw
ls -l vm.vma vm.vma.zst
run "$vma" verify vm.vma.zst
zstd -dc vm.vma.zst | "$vma" verify -
echo "zstd -dc vm.vma.zst | vma verify -: OK"

echo
echo "== checking"
# check_disk <source> <extracted>: the archive records the size rounded up
# to 512 bytes; the extra bytes must be zero.
check_disk() {
    local src=$1 out=$2 n r
    n=$(stat -c %s "$src")
    r=$(( (n + 511) / 512 * 512 ))
    [ "$(stat -c %s "$out")" -eq "$r" ] || { echo "size of $out is not $r" >&2; exit 1; }
    cmp -n "$n" "$src" "$out"
    if [ "$r" -gt "$n" ]; then
        tail -c +$((n + 1)) "$out" | cmp - <(head -c $((r - n)) /dev/zero)
    fi
    echo "$out: same as $src ($n bytes)"
}
check_disk disk0.raw out/disk-drive-scsi0.raw
check_disk disk1.raw out/disk-drive-scsi1.raw
cmp qemu-server.conf out/qemu-server.conf
echo "out/qemu-server.conf: same as qemu-server.conf"

run e2fsck -fn out/disk-drive-scsi0.raw
run debugfs -R 'cat /hello.txt' out/disk-drive-scsi0.raw
debugfs -R 'cat /data/random.bin' out/disk-drive-scsi0.raw 2>/dev/null | cmp - tree/data/random.bin
echo "/data/random.bin in the restored filesystem: same as the original"

echo
echo "== one file out of the backup, without restoring it: vma mount"
mkdir mnt
# The mount is usually gone by then: the trap must not fail on it (under
# set -e that made the demo exit 1 after "demo OK" and keep $tmp).
trap 'fusermount3 -u "$tmp/mnt" 2>/dev/null || true; rm -rf "$tmp"' EXIT
run "$vma" mount vm.vma mnt
ls -l mnt
run debugfs -R 'cat /hello.txt' mnt/drive-scsi0.raw
run fusermount3 -u mnt

echo
echo "demo OK"
