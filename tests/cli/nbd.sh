#!/bin/bash
# vma extract -r into images through NBD: qcow2 (with and without
# a backing file), vmdk, nbd+unix:// exports served by `qemu-nbd
# --persistent` and by `nbdkit memory`, QEMU protocol paths; zero blocks as
# zero clusters; Proxmox's qmrestore handshake; and every failure: one
# `vma:` line, exit 2, nothing left behind, no qemu-nbd left running (not
# even after a SIGKILL of vma).
# Needs qemu-utils, nbdkit, libnbd-bin (nbdcopy), zstd, jq; some failure
# cases need root (tmpfs, a mount namespace).
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

for tool in qemu-img qemu-nbd nbdkit nbdcopy zstd jq; do
    if ! command -v "$tool" >/dev/null; then
        echo "nbd.sh: SKIP: $tool is not installed" >&2
        exit 77
    fi
done

# Servers this script starts; stopped on every exit.
PIDS=()
KILL_PIDS=() # qemu-nbd left by vma (a failure): SIGTERM may not stop it
MNT=""
cleanup() {
    local p
    for p in "${KILL_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ -n "$MNT" ] && { umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null; }
    rm -rf "$T"
}
trap cleanup EXIT

A=$G/basic.vma
S0=8388608 # drive-scsi0
S1=540672  # drive-efidisk0
sha_of() { sed -n "s|^\([0-9a-f]*\)  ./$1\$|\1|p" "$G/basic.sha256"; }
SHA0=$(sha_of disk-drive-scsi0.raw)
SHA1=$(sha_of disk-drive-efidisk0.raw)
sha() { sha256sum <"$1" | cut -d' ' -f1; }

# The expected disks, from a plain extract (checked against the fixture).
"$VMA" extract "$A" "$T/ref" >/dev/null 2>&1 || fail "reference extract of basic.vma failed"
E0=$T/ref/disk-drive-scsi0.raw
E1=$T/ref/disk-drive-efidisk0.raw
check "reference scsi0 digest" [ "$(sha "$E0")" = "$SHA0" ]
check "reference efidisk0 digest" [ "$(sha "$E1")" = "$SHA1" ]

# data BYTES: deterministic incompressible bytes (AES-CTR of zeros).
data() {
    head -c "$1" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K 0f0e0d0c0b0a09080706050403020100 \
            -iv 00000000000000000000000000000000 2>/dev/null
}

# A bigger disk with data, holes, written zeros and partly zero clusters:
# 24 MiB; data at 0, 3 MiB (one 4 KiB block inside a zero cluster), 8-12
# MiB, 20 MiB; zeros written at 14-18 MiB; the rest holes.
GEN=$T/gen.raw
truncate -s 24M "$GEN"
data_at() { data "$2" >"$T/chunk" && dd if="$T/chunk" of="$GEN" bs=4096 seek=$(($1 / 4096)) conv=notrunc status=none; }
data_at 0 1048576
data_at $((3 * 1048576 + 8192)) 4096
data_at $((8 * 1048576)) 4194304
data_at $((20 * 1048576)) 655360
dd if=/dev/zero of="$GEN" bs=1M seek=14 count=4 conv=notrunc status=none
GA=$T/gen.vma
"$VMA" create "$GA" disk0="$GEN" >/dev/null 2>&1 || fail "create of the generated archive failed"
GS=$(stat -c %s "$GEN")

# no_qemu_nbd: no qemu-nbd that vma started for a path under $T is left
# (the servers this script starts itself have no "--" before their path).
no_qemu_nbd() {
    CHECKS=$((CHECKS + 1))
    if pgrep -f "^qemu-nbd .* -- .*$T" >/dev/null; then
        fail "a qemu-nbd of this test is still running"
        pgrep -af "^qemu-nbd .* -- .*$T" | sed 's/^/    /' >&2
    fi
}

# run_map NAME MAP [archive]: restore with the map from a plain file.
run_map() {
    local name=$1 text=$2 archive=${3:-$A}
    printf '%s' "$text" >"$T/$name.map"
    run "$VMA" extract -r "$T/$name.map" "$archive" "$T/$name.dir"
}

# same IMAGE FORMAT RAW: qemu-img compare says the contents are equal.
same() {
    CHECKS=$((CHECKS + 1))
    if ! qemu-img compare -q -f "$2" -F raw "$1" "$3" 2>"$T/cmp.err"; then
        fail "$1 differs from $3"
        show "$T/cmp.err" >&2
    fi
}

# digest_of IMAGE FORMAT: SHA-256 of the image's contents as raw bytes.
digest_of() {
    rm -f "$T/conv.raw"
    qemu-img convert -f "$2" -O raw "$1" "$T/conv.raw" && sha "$T/conv.raw"
}

# wait_for_socket PATH: a server we started is listening (bounded wait).
wait_for_socket() {
    local i
    for i in $(seq 1 100); do
        [ -S "$1" ] && return 0
        sleep 0.1
    done
    fail "no socket $1"
    return 1
}

# A restore that failed: exit 2, one line, only the list lines on stdout,
# no directory, no qemu-nbd left.
expect_map_failure() {
    expect_failure keep-stdout
    check "stdout holds only the list lines" cmp -s "$3" "$T/out"
    check "directory removed after the failure" [ ! -e "$T/$1.dir" ]
    check "no disk-*.raw left" [ -z "$(find "$T" -name 'disk-*.raw' -not -path "$T/ref/*")" ]
    no_qemu_nbd
    expect_err_has "$2"
}

# --- round trips ----------------------------------------------------------

case_ "qcow2 (0:) and vmdk (1:)"
qemu-img create -q -f qcow2 "$T/r0.qcow2" $S0
qemu-img create -q -f vmdk "$T/r1.vmdk" $S1
run_map rt1 "format=qcow2:0:drive-scsi0=$T/r0.qcow2
format=vmdk:1:drive-efidisk0=$T/r1.vmdk
"
expect_ok
expect_out_file "$G/basic.list"
same "$T/r0.qcow2" qcow2 "$E0"
same "$T/r1.vmdk" vmdk "$E1"
check "qcow2 digest" [ "$(digest_of "$T/r0.qcow2" qcow2)" = "$SHA0" ]
check "vmdk digest" [ "$(digest_of "$T/r1.vmdk" vmdk)" = "$SHA1" ]
no_qemu_nbd

# Zero blocks with 1: become zero clusters, not data: in the qcow2, the
# bytes flagged data are exactly the 64 KiB clusters of the expected disk
# that hold a non-zero byte, and the rest is reported zero.
data_clusters() { # RAW -> bytes of clusters with data
    local f=$1 n i c=0
    n=$(($(stat -c %s "$f") / 65536))
    for ((i = 0; i < n; i++)); do
        if [ -n "$(dd if="$f" bs=65536 skip=$i count=1 status=none | tr -d '\0' | head -c 1)" ]; then
            c=$((c + 65536))
        fi
    done
    echo $c
}
case_ "qcow2 with 1: (zero clusters)"
qemu-img create -q -f qcow2 "$T/z0.qcow2" $S0
qemu-img create -q -f qcow2 "$T/z1.qcow2" $S1
run_map zc "format=qcow2:1:drive-scsi0=$T/z0.qcow2
format=qcow2:1:drive-efidisk0=$T/z1.qcow2
"
expect_ok
same "$T/z0.qcow2" qcow2 "$E0"
same "$T/z1.qcow2" qcow2 "$E1"
qemu-img map --output=json "$T/z0.qcow2" >"$T/z0.map"
got=$(jq '[.[] | select(.data) | .length] | add // 0' "$T/z0.map")
want=$(data_clusters "$E0")
check "qcow2 data bytes $got = clusters with data $want" [ "$got" = "$want" ]
check "qcow2 reports zero ranges as zero, not data" \
    [ "$(jq '[.[] | select(.zero and (.data | not)) | .length] | add // 0' "$T/z0.map")" = $((S0 - want)) ]

case_ "qcow2 over a backing file, 1:"
head -c $S0 /dev/zero | tr '\0' '\252' >"$T/base.raw"
qemu-img convert -q -f raw -O qcow2 "$T/base.raw" "$T/base.qcow2"
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/ov0.qcow2" $S0
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/ov1.qcow2" $S1
run_map backing "format=qcow2:1:drive-scsi0=$T/ov0.qcow2
format=qcow2:1:drive-efidisk0=$T/ov1.qcow2
"
expect_ok
same "$T/ov0.qcow2" qcow2 "$E0"
same "$T/ov1.qcow2" qcow2 "$E1"
qemu-img map --output=json "$T/ov0.qcow2" >"$T/ov0.map"
check "nothing of the backing file shows through" \
    [ "$(jq '[.[] | select(.depth > 0)] | length' "$T/ov0.map")" = 0 ]
check "zero ranges are zero clusters of the overlay" \
    [ "$(jq '[.[] | select(.zero and (.data | not) and .depth == 0)] | length' "$T/ov0.map")" -gt 0 ]
check "the backing file is unchanged" [ "$(digest_of "$T/base.qcow2" qcow2)" = "$(sha "$T/base.raw")" ]

case_ "generated archive with holes and zeros: qcow2 0: and 1:, vmdk"
"$VMA" list "$GA" >"$T/gen.list"
for spec in qcow2:0 qcow2:1 vmdk:1; do
    f=${spec%:*}
    z=${spec#*:}
    qemu-img create -q -f "$f" "$T/g.$f.$z" "$GS"
    run_map "gen-$f-$z" "format=$f:$z:disk0=$T/g.$f.$z
" "$GA"
    expect_ok
    expect_out_file "$T/gen.list"
    same "$T/g.$f.$z" "$f" "$GEN"
done

# An NBD URI (its path holds ':' and '=', kept whole by the map parser).
# Stored data goes to qemu-nbd straight from the reader's extent buffers,
# which it takes in turn: two disks of 24 MiB of data (24 extents), so
# every buffer is reused many times, with requests of one target still in
# flight when the other's begin, and a partly zero cluster per MiB (staged,
# copied) between the runs.
case_ "many extents, two NBD targets: extent buffers reused in turn"
for d in a b; do
    data $((24 << 20)) >"$T/many-$d.raw"
    for ((m = 0; m < 24; m++)); do
        dd if=/dev/zero of="$T/many-$d.raw" bs=4096 seek=$((m * 256 + 3)) count=2 conv=notrunc status=none
    done
done
"$VMA" create "$T/many.vma" da="$T/many-a.raw" db="$T/many-b.raw" >/dev/null 2>&1 ||
    fail "create of the two-disk archive failed"
# (Three vma commands in this case: the valgrind stage's sample, every
# third command, then hits the same commands after it as before it came.)
run "$VMA" verify "$T/many.vma"
expect_ok
qemu-img create -q -f qcow2 "$T/many-a.qcow2" $((24 << 20))
qemu-img create -q -f raw "$T/many-b.img" $((24 << 20))
run_map many "format=qcow2:0:da=$T/many-a.qcow2
format=raw:1:db=$T/many-b.img
" "$T/many.vma"
expect_ok
same "$T/many-a.qcow2" qcow2 "$T/many-a.raw"
same "$T/many-b.img" raw "$T/many-b.raw"
no_qemu_nbd
rm -rf "$T/many"*

case_ "nbd+unix:// served by qemu-nbd --persistent"
head -c $S0 /dev/zero | tr '\0' '\252' >"$T/export.raw"
qemu-nbd --persistent --format=raw --socket="$T/q.sock" "$T/export.raw" 2>"$T/q.err" &
PIDS+=($!)
if wait_for_socket "$T/q.sock"; then
    run_map uri "1:drive-scsi0=nbd+unix:///?socket=$T/q.sock
skip=drive-efidisk0
"
    expect_ok
    check "export digest (1: over 0xAA)" [ "$(sha "$T/export.raw")" = "$SHA0" ]

    # The same server through a QEMU protocol path, via our own qemu-nbd.
    case_ "nbd:unix: QEMU path through qemu-nbd"
    head -c $S0 /dev/zero | tr '\0' '\252' >"$T/export.raw"
    run_map qpath "format=raw:1:drive-scsi0=nbd:unix:$T/q.sock
skip=drive-efidisk0
"
    expect_ok
    check "export digest via nbd:unix:" [ "$(sha "$T/export.raw")" = "$SHA0" ]
    no_qemu_nbd
fi

case_ "nbd+unix:// served by nbdkit memory"
nbdkit -f -U "$T/k.sock" memory size=$S0 2>"$T/k.err" &
PIDS+=($!)
if wait_for_socket "$T/k.sock"; then
    qemu-img create -q -f qcow2 "$T/k1.qcow2" $S1
    run_map nbdkit "1:drive-scsi0=nbd+unix:///?socket=$T/k.sock
format=qcow2:0:drive-efidisk0=$T/k1.qcow2
"
    expect_ok
    nbdcopy "nbd+unix:///?socket=$T/k.sock" "$T/k0.raw" 2>"$T/nbdcopy.err" ||
        fail "nbdcopy from nbdkit failed: $(cat "$T/nbdcopy.err")"
    check "nbdkit export digest" [ "$(sha "$T/k0.raw")" = "$SHA0" ]
    same "$T/k1.qcow2" qcow2 "$E1"
fi

# cache= modes become qemu-nbd --cache (and --aio=native), 1: adds
# --discard=unmap: a qemu-nbd in front of the real one logs its arguments
# (exec keeps the pid, which socket activation needs).
mkdir -p "$T/logbin"
printf '#!/bin/sh\necho "$*" >>"%s"\nexec "%s" "$@"\n' "$T/argv.log" "$(command -v qemu-nbd)" \
    >"$T/logbin/qemu-nbd"
chmod +x "$T/logbin/qemu-nbd"
if dd if=/dev/zero of="$T/odirect" bs=4096 count=1 oflag=direct 2>/dev/null; then
    MODES="none directsync writethrough writeback unsafe"
else
    echo "skipping cache=none/directsync: no O_DIRECT on $T"
    MODES="writethrough writeback unsafe"
fi
for mode in $MODES; do
    case_ "qcow2 cache=$mode"
    qemu-img create -q -f qcow2 "$T/c0.qcow2" $S0
    qemu-img create -q -f qcow2 "$T/c1.qcow2" $S1
    printf '%s' "cache=$mode:format=qcow2:1:drive-scsi0=$T/c0.qcow2
format=qcow2:cache=$mode:0:drive-efidisk0=$T/c1.qcow2
" >"$T/cache.map"
    rm -f "$T/argv.log"
    run env PATH="$T/logbin:$PATH" "$VMA" extract -r "$T/cache.map" "$A" "$T/cache-$mode.dir"
    expect_ok
    same "$T/c0.qcow2" qcow2 "$E0"
    same "$T/c1.qcow2" qcow2 "$E1"
    case $mode in
    none) opts="--cache=none --aio=native" ;;
    directsync) opts="--cache=directsync --aio=native" ;;
    writethrough) opts="--cache=writethrough" ;;
    *) opts="--cache=writeback" ;;
    esac
    printf '%s\n' "--format=qcow2 $opts --discard=unmap -- $T/c0.qcow2" \
        "--format=qcow2 $opts -- $T/c1.qcow2" >"$T/argv.want"
    check "qemu-nbd arguments for cache=$mode" cmp -s "$T/argv.want" "$T/argv.log"
done

case_ "skip= and -d with an NBD target"
qemu-img create -q -f qcow2 "$T/s0.qcow2" $S0
run_map skip "format=qcow2:0:drive-scsi0=$T/s0.qcow2
skip=drive-efidisk0
"
expect_ok
same "$T/s0.qcow2" qcow2 "$E0"
qemu-img create -q -f qcow2 "$T/s1.qcow2" $S1
printf '%s' "format=qcow2:0:drive-efidisk0=$T/s1.qcow2
" >"$T/dlist.map"
rm -rf "$T/dlist.dir"
run "$VMA" extract -d drive-efidisk0 -r "$T/dlist.map" "$A" "$T/dlist.dir"
expect_ok
same "$T/s1.qcow2" qcow2 "$E1"

# --- extract --format: another hypervisor's disk, without a map -----------

# Each format through qemu-img create + qemu-nbd: disk-<dev>.<fmt>, of that
# format, holding the archive's disk; DEVINFO names the file being written.
for fmt in qcow2 vmdk vdi vhdx raw; do
    case_ "extract --format=$fmt"
    run "$VMA" extract --format=$fmt "$A" "$T/fmt-$fmt"
    expect_ok
    expect_out "DEVINFO $T/fmt-$fmt/tmp-disk-drive-scsi0.$fmt $S0
DEVINFO $T/fmt-$fmt/tmp-disk-drive-efidisk0.$fmt $S1
"
    check "$fmt: no tmp-disk left" [ -z "$(find "$T/fmt-$fmt" -name 'tmp-disk-*')" ]
    check "$fmt: scsi0 is a $fmt image" \
        qemu-img info --output=json "$T/fmt-$fmt/disk-drive-scsi0.$fmt" | grep -q "\"format\": \"$fmt\""
    check "$fmt: scsi0 digest" [ "$(digest_of "$T/fmt-$fmt/disk-drive-scsi0.$fmt" $fmt)" = "$SHA0" ]
    check "$fmt: efidisk0 digest" [ "$(digest_of "$T/fmt-$fmt/disk-drive-efidisk0.$fmt" $fmt)" = "$SHA1" ]
    check "$fmt: the configs too" cmp -s "$T/fmt-$fmt/qemu-server.conf" "$T/ref/qemu-server.conf"
    no_qemu_nbd
done
# Sparse: basic.vma's zero clusters stay unallocated in the qcow2.
check "qcow2: zero clusters are not data" \
    qemu-img map --output=json "$T/fmt-qcow2/disk-drive-scsi0.qcow2" | grep -q '"data": false'
check "qcow2: smaller than the raw disk" \
    [ "$(stat -c %s "$T/fmt-qcow2/disk-drive-scsi0.qcow2")" -lt $S0 ]
rm -rf "$T"/fmt-*

case_ "extract --format=qcow2 -d drive-efidisk0: that disk only"
run "$VMA" extract --format=qcow2 -d drive-efidisk0 "$A" "$T/fmt-d"
expect_ok
check "only efidisk0" [ "$(cd "$T/fmt-d" && ls disk-*)" = disk-drive-efidisk0.qcow2 ]
check "efidisk0 digest (-d)" [ "$(digest_of "$T/fmt-d/disk-drive-efidisk0.qcow2" qcow2)" = "$SHA1" ]

case_ "extract --format=qcow2 --output-format=json names the qcow2 files"
run "$VMA" extract --format=qcow2 --output-format=json "$A" "$T/fmt-j"
expect_ok
check "JSON file name" grep -q '"file": "disk-drive-scsi0.qcow2"' "$T/out"
rm -rf "$T/fmt-d" "$T/fmt-j"

case_ "extract --format: refused with -r, --salvage, an unknown format"
run "$VMA" extract --format=qcow2 -r "$T/none.map" "$A" "$T/fmt-x"
expect_rc 1
expect_err_has "vma: --format cannot be used with -r"
run "$VMA" extract --salvage --format=qcow2 "$A" "$T/fmt-x"
expect_rc 1
expect_err_has "vma: --format cannot be used with --salvage"
run "$VMA" extract --format=vpc "$A" "$T/fmt-x"
expect_rc 1
expect_err_has "vma: unknown --format 'vpc' (raw, qcow2, vmdk, vdi or vhdx)"
check "no directory made" [ ! -e "$T/fmt-x" ]

# --- Proxmox's qmrestore handshake -----------------------------------------
# `vma extract -v -r <fifo> - <tmpdir>`, the archive on stdin; vma prints
# the list lines, then reads map lines and "done" from the FIFO.

# handshake NAME FEED...: FEED writes the archive to stdout; FEED "file"
# puts the archive itself on stdin.
handshake() {
    local name=$1
    shift
    rm -f "$T/$name.fifo"
    mkfifo "$T/$name.fifo"
    qemu-img create -q -f qcow2 "$T/$name.0.qcow2" $S0
    qemu-img create -q -f qcow2 "$T/$name.1.qcow2" $S1
    printf '%s\n' \
        "throttling.bps=1000000000:throttling.group=drive-scsi0:format=qcow2:0:drive-scsi0=$T/$name.0.qcow2" \
        "throttling.group=drive-efidisk0:format=qcow2:0:drive-efidisk0=$T/$name.1.qcow2" \
        done >"$T/$name.fifo" &
    local wpid=$!
    if [ "$1" = file ]; then
        "$VMA" extract -v -r "$T/$name.fifo" - "$T/$name.dir" <"$A" >"$T/out" 2>"$T/err"
    else
        "$@" | "$VMA" extract -v -r "$T/$name.fifo" - "$T/$name.dir" >"$T/out" 2>"$T/err"
    fi
    RC=$?
    kill $wpid 2>/dev/null
    wait $wpid 2>/dev/null
}
# What -v prints for basic.vma, from the same handshake into raw files.
truncate -s $S0 "$T/hr0.raw"
truncate -s $S1 "$T/hr1.raw"
mkfifo "$T/ref.fifo"
printf '%s\n' "0:drive-scsi0=$T/hr0.raw" "0:drive-efidisk0=$T/hr1.raw" done >"$T/ref.fifo" &
wpid=$!
"$VMA" extract -v -r "$T/ref.fifo" - "$T/hr.dir" <"$A" 2>/dev/null | norm_duration >"$T/hs.want"
kill $wpid 2>/dev/null
wait $wpid 2>/dev/null
check "the -v output starts with the list lines" \
    cmp -s "$G/basic.list" <(head -n "$(wc -l <"$G/basic.list")" "$T/hs.want")

case_ "qmrestore handshake, the archive file on stdin"
handshake hs1 file
expect_ok
norm_duration <"$T/out" >"$T/hs.got"
check "stdout: list, progress and totals lines" cmp -s "$T/hs.want" "$T/hs.got"
same "$T/hs1.0.qcow2" qcow2 "$E0"
same "$T/hs1.1.qcow2" qcow2 "$E1"
no_qemu_nbd

case_ "qmrestore handshake, zstd -dc of a .vma.zst"
handshake hs2 zstd -q -dc "$G/basic.vma.zst"
expect_ok
norm_duration <"$T/out" >"$T/hs.got"
check "stdout: list, progress and totals lines" cmp -s "$T/hs.want" "$T/hs.got"
same "$T/hs2.0.qcow2" qcow2 "$E0"
same "$T/hs2.1.qcow2" qcow2 "$E1"
no_qemu_nbd

# --- failures ---------------------------------------------------------------

qemu-img create -q -f qcow2 "$T/ok1.qcow2" $S1
OK1="format=qcow2:0:drive-efidisk0=$T/ok1.qcow2"

case_ "target does not exist"
run_map nonexist "format=qcow2:0:drive-scsi0=$T/missing.qcow2
$OK1
"
expect_map_failure nonexist "vma: cannot open target $T/missing.qcow2 of device 'drive-scsi0': qemu-nbd: Failed to blk_new_open '$T/missing.qcow2': Could not open '$T/missing.qcow2': No such file or directory" "$G/basic.list"
check "a missing target is not created" [ ! -e "$T/missing.qcow2" ]

case_ "format=qcow2 on a raw file"
truncate -s $S0 "$T/plain.img"
run_map wrongfmt "format=qcow2:0:drive-scsi0=$T/plain.img
$OK1
"
expect_map_failure wrongfmt "Image is not in qcow2 format" "$G/basic.list"
expect_err_has "device 'drive-scsi0'"

case_ "unknown format"
run_map badfmt "format=qcow3:0:drive-scsi0=$T/plain.img
$OK1
"
expect_map_failure badfmt "Unknown driver 'qcow3'" "$G/basic.list"

case_ "image locked by a running qemu-nbd"
qemu-img create -q -f qcow2 "$T/locked.qcow2" $S0
qemu-nbd --persistent --format=qcow2 --socket="$T/lock.sock" "$T/locked.qcow2" 2>"$T/lock.err" &
lockpid=$!
PIDS+=($lockpid)
if wait_for_socket "$T/lock.sock"; then
    run_map locked "format=qcow2:0:drive-scsi0=$T/locked.qcow2
$OK1
"
    expect_map_failure locked "the image is in use by another process" "$G/basic.list"
    expect_err_has "Failed to get \"write\" lock"
fi
kill $lockpid 2>/dev/null
wait $lockpid 2>/dev/null

case_ "target too small"
qemu-img create -q -f qcow2 "$T/small.qcow2" $((S0 - 65536))
run_map small "format=qcow2:0:drive-scsi0=$T/small.qcow2
$OK1
"
expect_map_failure small "vma: target $T/small.qcow2 of device 'drive-scsi0' has $((S0 - 65536)) bytes; it needs $S0 to $((S0 + 4194304))" "$G/basic.list"

case_ "target more than 4 MiB too large"
qemu-img create -q -f qcow2 "$T/large.qcow2" $((S0 + 8388608))
run_map large "format=qcow2:0:drive-scsi0=$T/large.qcow2
$OK1
"
expect_map_failure large "has $((S0 + 8388608)) bytes; it needs $S0 to $((S0 + 4194304))" "$G/basic.list"

case_ "nbd+unix:// with no server"
run_map nosrv "1:drive-scsi0=nbd+unix:///?socket=$T/none.sock
$OK1
"
expect_map_failure nosrv "cannot open target nbd+unix:///?socket=$T/none.sock of device 'drive-scsi0'" "$G/basic.list"

# An NBD server that fails: nbdkit's error filter on writes, and an eval
# plugin whose flush fails. The server's own messages go to $T/e*.err.
# nbd_server NAME ARGS...: start nbdkit on $T/NAME.sock.
nbd_server() {
    local name=$1
    shift
    rm -f "$T/$name.sock"
    nbdkit -f -U "$T/$name.sock" "$@" 2>"$T/$name.err" &
    SRV=$!
    PIDS+=($SRV)
    wait_for_socket "$T/$name.sock"
}
stop_server() { kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; }

case_ "NBD server: ENOSPC on write"
if nbd_server ewrite --filter=error memory size=$S0 error-pwrite-rate=1 error=ENOSPC; then
    run_map ewrite "0:drive-scsi0=nbd+unix:///?socket=$T/ewrite.sock
$OK1
"
    expect_map_failure ewrite "vma: restore failed - device 'drive-scsi0', target nbd+unix:///?socket=$T/ewrite.sock: write of " "$G/basic.list"
    expect_err_has "failed: No space left on device"
fi
stop_server

case_ "NBD server: EIO on write-zeroes (1:)"
if nbd_server ezero --filter=error memory size=$S0 error-zero-rate=1 error=EIO; then
    run_map ezero "1:drive-scsi0=nbd+unix:///?socket=$T/ezero.sock
$OK1
"
    expect_map_failure ezero "target nbd+unix:///?socket=$T/ezero.sock: write-zeroes of " "$G/basic.list"
    expect_err_has "failed: Input/output error"
fi
stop_server

case_ "NBD server: the flush fails"
if nbd_server eflush eval get_size="echo $S0" pwrite='cat >/dev/null' can_write='exit 0' \
    can_flush='exit 0' flush='echo "EIO flush refused" >&2; exit 1'; then
    run_map eflush "0:drive-scsi0=nbd+unix:///?socket=$T/eflush.sock
$OK1
"
    expect_map_failure eflush "vma: restore failed - device 'drive-scsi0', target nbd+unix:///?socket=$T/eflush.sock: flush failed: Input/output error" "$G/basic.list"
fi
stop_server

case_ "qemu-nbd not installed"
# A PATH without qemu-nbd (but with the VMA_RUNNER's program, valgrind).
mkdir -p "$T/nobin"
runner=${VMA_RUNNER:-}
runner=${runner%% *}
# link_runner DIR: a wrapper that runs the runner from its real place.
link_runner() {
    [ -z "$runner" ] && return 0
    printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$runner")" >"$1/$runner"
    chmod +x "$1/$runner"
}
link_runner "$T/nobin"
printf '%s\n' "format=qcow2:0:drive-scsi0=$T/r0.qcow2" "$OK1" >"$T/nobin.map"
run env PATH="$T/nobin" "$VMA" extract -r "$T/nobin.map" "$A" "$T/nobin.dir"
expect_map_failure nobin "qemu-nbd not found in PATH: install the Debian package qemu-utils" "$G/basic.list"
case_ "extract --format=qcow2 without qemu-img"
run env PATH="$T/nobin" "$VMA" extract --format=qcow2 "$A" "$T/fmt-x"
expect_failure keep-stdout
expect_err_has "cannot run qemu-img to create $T/fmt-x/tmp-disk-drive-scsi0.qcow2 - No such file or directory (install the Debian package qemu-utils"
check "directory removed" [ ! -e "$T/fmt-x" ]
# On Proxmox VE (pve-qemu-kvm's doc directory, in a mount namespace here),
# the hint names pve-qemu-kvm: Debian's qemu-utils conflicts with it.
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    case_ "no qemu-nbd on a Proxmox VE host"
    run unshare -m sh -c 'mount -t tmpfs tmpfs /usr/share/doc && mkdir /usr/share/doc/pve-qemu-kvm &&
        exec env PATH="$1" "$2" extract -r "$3" "$4" "$5"' sh "$T/nobin" "$VMA" "$T/nobin.map" "$A" "$T/nobin.dir"
    expect_map_failure nobin "qemu-nbd not found in PATH: it comes with the Proxmox VE package pve-qemu-kvm" "$G/basic.list"
fi

# A qemu-nbd that never answers: SIGINT must end the wait for its start,
# and vma must stop and reap it.
case_ "SIGINT while qemu-nbd does not start"
mkdir -p "$T/hangbin"
printf '#!/bin/sh\necho $$ >"%s"\nexec sleep 600\n' "$T/hang.pid" >"$T/hangbin/qemu-nbd"
chmod +x "$T/hangbin/qemu-nbd"
link_runner "$T/hangbin"
rm -f "$T/hang.pid"
printf '%s\n' "format=qcow2:0:drive-scsi0=$T/r0.qcow2" "$OK1" >"$T/hang.map"
env PATH="$T/hangbin:/usr/bin:/bin" "$VMA" extract -r "$T/hang.map" "$A" "$T/hang.dir" \
    >"$T/out" 2>"$T/err" &
vpid=$!
for i in $(seq 1 100); do
    [ -s "$T/hang.pid" ] && break
    sleep 0.1
done
hpid=$(cat "$T/hang.pid" 2>/dev/null)
kill -INT $vpid
wait $vpid
RC=$?
expect_map_failure hang "vma: interrupted by signal" "$G/basic.list"
check "the hanging qemu-nbd was started" [ -n "$hpid" ]
gone() { [ -n "$1" ] && ! kill -0 "$1" 2>/dev/null; }
check "the hanging qemu-nbd was stopped" gone "$hpid"

# SIGKILL of vma while its qemu-nbd waits for an NBD server that never
# answers (a socket where nobody accepts): qemu-nbd dies with vma instead
# of staying under init, and no vma-nbd.* socket directory is left.
case_ "SIGKILL of vma while qemu-nbd waits for a silent server"
python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
time.sleep(600)' "$T/silent.sock" &
silent=$!
PIDS+=($silent)
if wait_for_socket "$T/silent.sock"; then
    mkdir -p "$T/ktmp"
    printf '%s\n' "format=raw:0:drive-scsi0=nbd:unix:$T/silent.sock" "$OK1" >"$T/silent.map"
    TMPDIR=$T/ktmp "$VMA" extract -r "$T/silent.map" "$A" "$T/silent.dir" >/dev/null 2>&1 &
    vpid=$!
    PIDS+=($vpid)
    qpid=""
    for i in $(seq 1 100); do
        qpid=$(pgrep -f "^qemu-nbd .* -- nbd:unix:$T/silent.sock")
        [ -n "$qpid" ] && break
        sleep 0.1
    done
    check "qemu-nbd was started" [ -n "$qpid" ]
    KILL_PIDS+=($qpid)
    kill -KILL $vpid
    wait $vpid 2>/dev/null
    for i in $(seq 1 50); do
        gone "$qpid" && break
        sleep 0.1
    done
    check "qemu-nbd died with vma" gone "$qpid"
    gone "$qpid" && KILL_PIDS=()
    check "no vma-nbd.* directory left" [ -z "$(ls -A "$T/ktmp")" ]
fi
kill $silent 2>/dev/null
wait $silent 2>/dev/null

# qemu-nbd killed while it serves a throttled restore (a few seconds).
case_ "qemu-nbd killed mid-restore"
qemu-img create -q -f qcow2 "$T/kill.qcow2" "$GS"
printf '%s\n' "throttling.bps=2000000:format=qcow2:1:disk0=$T/kill.qcow2" >"$T/kill.map"
"$VMA" extract -r "$T/kill.map" "$GA" "$T/kill.dir" >"$T/out" 2>"$T/err" &
vpid=$!
for i in $(seq 1 100); do
    qpid=$(pgrep -f "^qemu-nbd .* -- $T/kill.qcow2")
    [ -n "$qpid" ] && break
    sleep 0.1
done
[ -n "$qpid" ] && kill -KILL $qpid
wait $vpid
RC=$?
# (killed while restoring, or under valgrind maybe while connecting)
expect_map_failure kill "target $T/kill.qcow2" "$T/gen.list"
expect_err_re "^vma: (restore failed - device 'disk0', target $T/kill.qcow2: |cannot open target $T/kill.qcow2 of device 'disk0': )"
expect_err_has "qemu-nbd was killed by signal 9"

case_ "SIGINT during a restore into qcow2"
qemu-img create -q -f qcow2 "$T/int.qcow2" "$GS"
printf '%s\n' "throttling.bps=2000000:format=qcow2:1:disk0=$T/int.qcow2" >"$T/int.map"
"$VMA" extract -r "$T/int.map" "$GA" "$T/int.dir" >"$T/out" 2>"$T/err" &
vpid=$!
for i in $(seq 1 100); do
    pgrep -f "^qemu-nbd .* -- $T/int.qcow2" >/dev/null && break
    sleep 0.1
done
kill -INT $vpid
wait $vpid
RC=$?
expect_map_failure int "vma: interrupted by signal" "$T/gen.list"

if [ "$(id -u)" = 0 ]; then
    case_ "ENOSPC: qcow2 on a full tmpfs"
    MNT=$T/mnt
    mkdir -p "$MNT"
    if mount -t tmpfs -o size=4m,mode=0755 tmpfs "$MNT"; then
        data_at 0 $((16 * 1048576)) # the generated disk: now 16 MiB of data
        "$VMA" create "$T/full.vma" disk0="$GEN" >/dev/null 2>&1 || fail "create full.vma"
        "$VMA" list "$T/full.vma" >"$T/full.list"
        qemu-img create -q -f qcow2 "$MNT/full.qcow2" "$GS"
        run_map full "format=qcow2:0:disk0=$MNT/full.qcow2
" "$T/full.vma"
        expect_map_failure full "vma: restore failed - device 'disk0', target $MNT/full.qcow2: " "$T/full.list"
        expect_err_has "No space left on device"
        umount "$MNT" && MNT=""
    else
        fail "cannot mount a tmpfs as root"
    fi

    # Without qemu-block-extra: its modules hidden in a mount namespace.
    case_ "rbd: without qemu-block-extra"
    moddir=$(dirname "$(find /usr/lib -path '*/qemu/block-rbd.so' 2>/dev/null | head -n 1)")
    if [ "$moddir" != . ] && unshare -m true 2>/dev/null; then
        printf '%s\n' "format=raw:0:drive-scsi0=rbd:pool/vm-100-disk-0:conf=/etc/pve/ceph.conf:id=admin" \
            "$OK1" >"$T/rbd.map"
        run unshare -m sh -c 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"' sh "$moddir" \
            "$VMA" extract -r "$T/rbd.map" "$A" "$T/rbd.dir"
        expect_map_failure rbd "cannot open target rbd:pool/vm-100-disk-0:conf=/etc/pve/ceph.conf:id=admin of device 'drive-scsi0': qemu-nbd: Failed to blk_new_open 'rbd:pool/vm-100-disk-0:conf=/etc/pve/ceph.conf:id=admin': Unknown protocol 'rbd' (install the Debian package qemu-block-extra)" "$G/basic.list"
        run unshare -m sh -c 'mount -t tmpfs tmpfs "$1" && mount -t tmpfs tmpfs /usr/share/doc &&
            mkdir /usr/share/doc/pve-qemu-kvm && shift && exec "$@"' sh "$moddir" \
            "$VMA" extract -r "$T/rbd.map" "$A" "$T/rbd.dir"
        expect_map_failure rbd "Unknown protocol 'rbd' (on Proxmox VE, pve-qemu-kvm's /usr/bin/qemu-nbd has it: check which qemu-nbd comes first in PATH)" "$G/basic.list"
    else
        echo "nbd.sh: skipping the qemu-block-extra case: no module dir or no mount namespace"
    fi
else
    echo "nbd.sh: skipping the ENOSPC and qemu-block-extra cases: they need root"
fi

done_
