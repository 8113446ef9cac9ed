#!/bin/bash
# Failing environments that need a small file system: `extract`
# and `create` on a 2 MiB tmpfs that fills up. Exit 2 with one clear line
# (ENOSPC), and everything they made is removed again. Needs root to mount;
# skipped (77) otherwise.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

if [ "$(id -u)" != 0 ]; then
    echo "fullfs.sh: SKIP: mounting a tmpfs needs root" >&2
    exit 77
fi
M=$T/mnt
mkdir -p "$M"
if ! mount -t tmpfs -o size=2m,mode=0755 tmpfs "$M" 2>"$T/mount.err"; then
    echo "fullfs.sh: SKIP: cannot mount a tmpfs: $(cat "$T/mount.err")" >&2
    exit 77
fi
trap 'umount "$M" 2>/dev/null || umount -l "$M" 2>/dev/null; rm -rf "$T"' EXIT

A=$G/basic.vma

# data FILE BYTES: deterministic incompressible bytes (AES-CTR of zeros).
data() {
    head -c "$2" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K 0f0e0d0c0b0a09080706050403020100 \
            -iv 00000000000000000000000000000000 >"$1" 2>/dev/null
}
data "$T/d4.raw" 4194304

mnt_is() {
    local got
    got=$(ls -A "$M" | paste -sd' ')
    check "the tmpfs holds '$got', expected '$1'" [ "$got" = "$1" ]
}

# --- extract ------------------------------------------------------------

# A vmstate stream longer than its size field: the format says
# bytes past it are discarded, so extract never writes them; a 4 KiB
# stream with 118000 zero clusters made 7.7 GB before it was cut.
case_ "extract of a 4 KiB vmstate carrying 118000 zero clusters"
"$CRAFT" vmstate-long "$T/vlong.vma" 4096 118000 0 >"$T/vlong.expect" || fail "vma_craft"
run "$VMA" extract "$T/vlong.vma" "$M/vlong"
expect_ok
check "vmstate.bin is 4096 bytes" [ "$(stat -c %s "$M/vlong/vmstate.bin")" = 4096 ]
check "vmstate.bin holds zeros" cmp -s "$T/vlong.expect" "$M/vlong/vmstate.bin"
check "vmstate.bin is a hole ($(stat -c %b "$M/vlong/vmstate.bin") blocks)" \
    [ "$(stat -c %b "$M/vlong/vmstate.bin")" = 0 ]
rm -rf "$M/vlong"

case_ "extract of a 100000-byte vmstate carrying 200 full clusters (13 MB)"
"$CRAFT" vmstate-long "$T/vdata.vma" 100000 200 0xffff >"$T/vdata.expect" || fail "vma_craft"
run "$VMA" extract "$T/vdata.vma" "$M/vdata"
expect_ok
check "vmstate.bin is the first 100000 bytes of the stream" \
    cmp -s "$T/vdata.expect" "$M/vdata/vmstate.bin"
check "vmstate.bin is 100000 bytes" [ "$(stat -c %s "$M/vdata/vmstate.bin")" = 100000 ]
rm -rf "$M/vdata"

case_ "extract of a vmstate with zero blocks between data"
"$CRAFT" vmstate-long "$T/vmix.vma" 300000 9 0x8001 >"$T/vmix.expect" || fail "vma_craft"
run "$VMA" extract "$T/vmix.vma" "$M/vmix"
expect_ok
check "vmstate.bin content" cmp -s "$T/vmix.expect" "$M/vmix/vmstate.bin"
check "vmstate.bin is 300000 bytes" [ "$(stat -c %s "$M/vmix/vmstate.bin")" = 300000 ]
alloc=$(($(stat -c %b "$M/vmix/vmstate.bin") * 512))
check "zero blocks are holes ($alloc bytes allocated)" [ $alloc -le $((5 * 2 * 4096)) ]
rm -rf "$M/vmix"

# basic.vma stores 2.9 MB of data in an 8 MiB and a 528 KiB disk.
case_ "extract into a 2 MiB tmpfs"
run "$VMA" extract "$A" "$M/x"
expect_failure keep-stdout
expect_err_re '^vma: restore failed - .*No space left on device$'
check "target directory removed" [ ! -e "$M/x" ]
mnt_is ""

case_ "extract - (stdin) into a 2 MiB tmpfs"
run_in "$A" "$VMA" extract - "$M/x"
expect_failure keep-stdout
expect_err_has "No space left on device"
mnt_is ""

case_ "extract of a zstd archive into a 2 MiB tmpfs"
run "$VMA" extract "$G/basic.vma.zst" "$M/x"
expect_failure keep-stdout
expect_err_has "No space left on device"
mnt_is ""

case_ "extract -v into a 2 MiB tmpfs"
run "$VMA" extract -v "$A" "$M/x"
expect_failure keep-stdout
expect_err_has "No space left on device"
no_totals() { ! grep -q '^total bytes read' "$T/out"; }
check "no totals claimed" no_totals
mnt_is ""

# A file system already full: the configs cannot be written.
case_ "extract into a full tmpfs"
dd if=/dev/zero of="$M/filler" bs=64k 2>/dev/null
run "$VMA" extract "$A" "$M/x"
expect_failure keep-stdout
expect_err_has "No space left on device"
mnt_is "filler"
rm -f "$M/filler"

# --- create -------------------------------------------------------------

for compress in none zstd gzip lzo; do
    case_ "create --compress=$compress onto a 2 MiB tmpfs"
    run "$VMA" create --compress=$compress "$M/out.vma" -c "$G/basic.conf" \
        drive-scsi0="$T/d4.raw"
    expect_failure
    expect_err_re '^vma: (.*writing the archive at offset [0-9]+|finishing the archive): write of [0-9]+ bytes at output byte [0-9]+ failed: No space left on device$'
    check "no partial archive" [ ! -e "$M/out.vma" ]
    mnt_is ""
done

case_ "create onto a tmpfs with 100 KiB left"
dd if=/dev/zero of="$M/filler" bs=1k count=1948 2>/dev/null
run "$VMA" create "$M/out.vma" drive-scsi0="$T/d4.raw"
expect_failure
expect_err_has "No space left on device"
mnt_is "filler"
rm -f "$M/filler"

# The tmpfs is fine for an archive that fits: the failures above are ENOSPC.
case_ "create of a small archive onto the tmpfs works"
head -c 65536 "$T/d4.raw" >"$T/d64k.raw"
run "$VMA" create "$M/ok.vma" drive-scsi0="$T/d64k.raw"
expect_ok
run "$VMA" verify "$M/ok.vma"
expect_ok
rm -f "$M/ok.vma"


# A single-frame .vma.zst is mounted through a cache: a vmstate stream
# longer than its size field is cached only up to that size, so
# a 64 KiB vmstate carrying 13 MB fits a cache on the 2 MiB tmpfs.
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null && command -v zstd >/dev/null &&
    "$VMA" mount --help >/dev/null 2>&1; then
    case_ "mount of a .zst whose 64 KiB vmstate carries 200 full clusters: cache on 2 MiB"
    "$CRAFT" vmstate-long "$T/vcache.vma" 65536 200 0xffff >"$T/vcache.expect" || fail "vma_craft"
    zstd -q -T1 -c "$T/vcache.vma" >"$T/vcache.vma.zst"
    mkdir -p "$T/mv"
    run "$VMA" mount -c "$M" "$T/vcache.vma.zst" "$T/mv"
    expect_rc 0
    if mountpoint -q "$T/mv"; then
        check "vmstate.bin is the first 64 KiB of the stream" \
            cmp -s "$T/vcache.expect" "$T/mv/vmstate.bin"
        fusermount3 -u "$T/mv" || fail "fusermount3 -u $T/mv"
    else
        fail "not mounted: $(cat "$T/err")"
    fi
    mnt_is ''
fi

done_
