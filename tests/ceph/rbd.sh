# Restore into, and back up from, Ceph RBD images the way Proxmox VE does
# for Ceph storage without krbd: a one-node cluster (cluster.sh), images
# pre-created with `rbd create --size <MiB>`, and map lines
#   format=raw:0:drive-scsi0=rbd:<pool>/<image>:conf=<conf>:id=admin:keyring=<keyring>
# (PVE::Storage::RBDPlugin::path; 0: because RBD images read as zeros
# where never written, Proxmox's "sparseinit"). vma runs qemu-nbd, whose
# rbd driver (qemu-block-extra) talks to the cluster; the images are read
# back with `rbd export`, independently of vma and QEMU.
#
# Usage: rbd.sh <vma> <golden-dir> <vma_craft>
# SPDX-License-Identifier: MIT

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../cli/common.sh"
. "$here/cluster.sh"

missing=$(ceph_missing)
if [ -n "$missing" ]; then
    echo "rbd.sh: SKIP: not installed: $missing(bash scripts/deps.sh installs them)" >&2
    exit 77
fi
for t in jq zstd openssl; do
    command -v $t >/dev/null || { echo "rbd.sh: $t is missing (bash scripts/deps.sh)" >&2; exit 99; }
done

writer_pid=
cleanup() {
    [ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null
    ceph_stop
    rm -rf "$T"
}
trap cleanup EXIT

t0=$EPOCHREALTIME
ceph_start || { echo "rbd.sh: the Ceph cluster did not start (logs above)" >&2; exit 1; }
echo "rbd.sh: cluster up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"

P=$CEPH_POOL
rbd_() { timeout 120 rbd -c "$CEPH_CONF" "$@"; }

# rbd_path IMAGE: the path PVE writes for a pveceph-managed cluster.
rbd_path() { echo "rbd:$P/$1:conf=$CEPH_CONF:id=admin:keyring=$CEPH_KEYRING"; }

# rbd_create IMAGE BYTES: as Proxmox allocates a volume, size rounded up
# to KiB and then to MiB (rbd's --size unit).
rbd_create() { rbd_ create --image-format 2 --size $((($2 + (1 << 20) - 1) >> 20)) "$P/$1"; }

# export_is IMAGE BYTES SHA256: the image read back with rbd export has the
# expected digest over its first BYTES and only zeros after them.
export_is() {
    local img=$1 bytes=$2 want=$3 got size
    CHECKS=$((CHECKS + 1))
    rm -f "$T/export"
    if ! rbd_ export --no-progress "$P/$img" "$T/export" 2>"$T/export.err"; then
        fail "rbd export $img failed"
        show "$T/export.err" >&2
        return
    fi
    got=$(head -c "$bytes" "$T/export" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "$img: sha256 of the first $bytes bytes is $got, expected $want"
    size=$(stat -c %s "$T/export")
    CHECKS=$((CHECKS + 1))
    if [ "$size" -gt "$bytes" ] && ! tail -c +$((bytes + 1)) "$T/export" | cmp -s - <(head -c $((size - bytes)) /dev/zero); then
        fail "$img: bytes after the device's $bytes are not zero"
    fi
}

# no_qemu_nbd: no qemu-nbd of this test is left running.
no_qemu_nbd() {
    CHECKS=$((CHECKS + 1))
    if pgrep -f "qemu-nbd.*$CEPH_DIR" >/dev/null; then
        fail "a qemu-nbd process is left running"
        pgrep -af "qemu-nbd.*$CEPH_DIR" >&2
    fi
}

# golden_sha NAME FILE: the digest of FILE in tests/golden/NAME.sha256.
golden_sha() { awk -v f="./$2" '$2 == f { print $1 }' "$G/$1.sha256"; }
golden_size() { awk -v f="$2" '$1 == f { print $2 }' "$G/$1.sizes"; }

# ---- golden archive, the qmrestore handshake ----------------------------------
# vma extract -v -r <fifo> - <tmpdir> with the archive on stdin from
# zstd -dc; the map lines and "done" written to the FIFO.

case_ "basic.vma.zst through a FIFO into two RBD images"
s0=$(golden_size basic disk-drive-scsi0.raw)
s1=$(golden_size basic disk-drive-efidisk0.raw)
rbd_create vm-100-disk-0 "$s0" && rbd_create vm-100-disk-1 "$s1" || fail "rbd create"
mkfifo "$T/fifo"
printf '%s\n' "format=raw:0:drive-efidisk0=$(rbd_path vm-100-disk-1)" \
    "format=raw:0:drive-scsi0=$(rbd_path vm-100-disk-0)" done >"$T/map"
timeout 120 sh -c 'cat "$1" >"$2"' sh "$T/map" "$T/fifo" &
writer_pid=$!
zstd -q -dc "$G/basic.vma.zst" | "$VMA" extract -v -r "$T/fifo" - "$T/out1" >"$T/out" 2>"$T/err"
RC=$?
wait "$writer_pid" 2>/dev/null
writer_pid=
expect_rc 0
check "list lines printed before the map is read" grep -q '^DEV: dev_id=1 size: 8388608 devname: drive-scsi0$' "$T/out"
export_is vm-100-disk-0 "$s0" "$(golden_sha basic disk-drive-scsi0.raw)"
export_is vm-100-disk-1 "$s1" "$(golden_sha basic disk-drive-efidisk0.raw)"
check "qemu-server.conf written" cmp -s <(sha256sum <"$T/out1/qemu-server.conf" | cut -d' ' -f1) <(golden_sha basic qemu-server.conf)
check "no raw disk files in the target dir" test -z "$(find "$T/out1" -name '*.raw')"
no_qemu_nbd

# ---- a generated archive: holes, zero clusters, partial clusters ---------------
# 4 MiB RBD objects: 0 data, 1 hole, 2 zero bytes, 3 64 KiB data and zero
# clusters alternating (and a zero 4 KiB block in a data cluster), 4 hole,
# 5 data up to a device size that is not a MiB multiple.
case_ "generated archive with holes and zero clusters"
rand() { openssl enc -aes-128-ctr -nosalt -pass "pass:$1" </dev/zero 2>/dev/null | head -c "$2"; }
M=$((1 << 20))
gsize=$((24 * M - 188 * 1024))
img=$T/gen.raw
truncate -s "$gsize" "$img"
rand a $((4 * M)) | dd of="$img" conv=notrunc status=none
head -c $((4 * M)) /dev/zero | dd of="$img" bs=1M seek=8 conv=notrunc status=none
for ((c = 0; c < 64; c += 2)); do
    rand "c$c" 65536 | dd of="$img" bs=64K seek=$((12 * 16 + c)) conv=notrunc status=none
done
head -c 4096 /dev/zero | dd of="$img" bs=4K seek=$((12 * 256 + 5)) conv=notrunc status=none
rand e $((gsize - 20 * M)) | dd of="$img" bs=1M seek=20 conv=notrunc status=none
gsha=$(sha256sum <"$img" | cut -d' ' -f1)
run "$VMA" create "$T/gen.vma" drive-scsi0="$img"
expect_ok

# 0: as Proxmox writes it for RBD, 1: (zeros written as NBD write-zeroes),
# and the line a storage with a bandwidth limit gets (100 MiB/s here).
for z in 0 1 t; do
    rbd_create "gen-$z" "$gsize" || fail "rbd create gen-$z"
    case $z in
    t) line="throttling.bps=104857600:throttling.group=ceph:format=raw:0:drive-scsi0=$(rbd_path gen-t)" ;;
    *) line="format=raw:$z:drive-scsi0=$(rbd_path "gen-$z")" ;;
    esac
    printf '%s\n' "$line" >"$T/map"
    run "$VMA" extract -r "$T/map" "$T/gen.vma" "$T/out-gen-$z"
    expect_ok
    export_is "gen-$z" "$gsize" "$gsha"
    no_qemu_nbd
done
# With 0: the zero clusters are not written: only objects 0, 3 and 5 exist.
prefix=$(rbd_ info --format json "$P/gen-0" | jq -r .block_name_prefix)
objects=$(timeout 60 rados -c "$CEPH_CONF" -p "$P" ls | grep -c "^$prefix\.")
check "0: wrote 3 RBD objects (data only), found $objects" test "$objects" = 3

# ---- back up from RBD -----------------------------------------------------------
# vma create -d format=raw:drive-scsi0=rbd:... reads the image through
# qemu-nbd; its device is the whole image (rounded up to a MiB by rbd
# create), so the first gsize bytes are the generated disk, the rest zeros.
case_ "create from an RBD image"
run "$VMA" create "$T/back.vma" -d "format=raw:drive-scsi0=$(rbd_path gen-0)"
expect_ok
run "$VMA" extract "$T/back.vma" "$T/back"
expect_rc 0
check "the disk backed up from RBD is the generated disk" \
    cmp -s -n "$gsize" "$img" "$T/back/disk-drive-scsi0.raw"
check "its device size is the image's, 24 MiB" test "$(stat -c %s "$T/back/disk-drive-scsi0.raw")" = $((24 * M))
check "and ends in zeros" cmp -s <(tail -c +$((gsize + 1)) "$T/back/disk-drive-scsi0.raw") <(head -c $((24 * M - gsize)) /dev/zero)
no_qemu_nbd

case_ "create from an RBD image that does not exist"
run "$VMA" create "$T/nosuch.vma" -d "format=raw:drive-scsi0=$(rbd_path nosuch)"
expect_failure
expect_err_has "rbd:$P/nosuch"
check "no archive left" test ! -e "$T/nosuch.vma"
no_qemu_nbd

# ---- what goes wrong -----------------------------------------------------------

# expect_restore_fails WHAT MAPLINE: extract of gen.vma with that map line
# fails with one "vma: " line naming the device, leaves no disk file and no
# qemu-nbd.
expect_restore_fails() {
    case_ "$1"
    printf '%s\n' "$2" >"$T/map"
    rm -rf "$T/bad"
    run "$VMA" extract -r "$T/map" "$T/gen.vma" "$T/bad"
    expect_failure keep-stdout # the list lines come first
    expect_err_has drive-scsi0
    check "no disk file left" test -z "$(find "$T/bad" -name '*.raw' 2>/dev/null)"
    no_qemu_nbd
}
expect_restore_fails "image does not exist" "format=raw:0:drive-scsi0=$(rbd_path nosuch)"
expect_restore_fails "pool does not exist" "format=raw:0:drive-scsi0=rbd:nopool/gen-0:conf=$CEPH_CONF:id=admin:keyring=$CEPH_KEYRING"
rbd_create small $((gsize - 8 * M))
expect_restore_fails "image smaller than the device" "format=raw:0:drive-scsi0=$(rbd_path small)"
rbd_create large $((gsize + 8 * M))
expect_restore_fails "image more than 4 MiB larger than the device" "format=raw:0:drive-scsi0=$(rbd_path large)"

done_
