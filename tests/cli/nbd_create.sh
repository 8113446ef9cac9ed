#!/bin/bash
# create from disk images through NBD: `-d format=<fmt>:` reads
# qcow2 (with a backing file), vmdk, vdi, vhdx, qed and NBD exports through
# qemu-nbd or libnbd; every archive is extracted and compared with
# `qemu-img convert -O raw` of its source. Holes and zero extents are never
# read (nbdkit's log filter counts the reads). A positional source with an
# image signature is refused. Errors: exit 2, one `vma:` line, no archive,
# no qemu-nbd left running.
# Usage: nbd_create.sh <vma> <golden-dir> <vma_craft>
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

for tool in qemu-img qemu-nbd nbdkit pgrep; do
    command -v $tool >/dev/null || { echo "nbd_create.sh: $tool not installed, skipped"; exit 77; }
done

# Under valgrind (VMA_RUNNER), drop valgrind's own "--<pid>-- WARNING:
# unhandled syscall" notes about pidfd_open(2), which lib/nbd.c uses to
# wait for qemu-nbd; they are not vma's output.
if [ -n "${VMA_RUNNER:-}" ]; then
    run() {
        "$@" >"$T/out" 2>"$T/err"
        RC=$?
        sed -i '/^--[0-9]*-- /d' "$T/err"
    }
fi

# Servers this script starts; stopped on every exit (common.sh's EXIT trap
# removes $T afterwards).
PIDS=()
stop_servers() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    PIDS=()
}
trap 'stop_servers; rm -rf "$T"' EXIT

# data FILE BYTES: deterministic incompressible bytes (AES-CTR of zeros).
data() {
    head -c "$2" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
            -iv 000000000000000000000000000000"$3" >"$1" 2>/dev/null
    [ "$(stat -c %s "$1")" = "$2" ] || { echo "nbd_create.sh: cannot make $1" >&2; exit 99; }
}

# serve SOCKET CMD...: start a server in the background, wait for its socket.
serve() {
    local sock=$1
    shift
    "$@" 2>>"$T/servers.log" &
    PIDS+=($!)
    wait_for "$sock" 30 || { echo "nbd_create.sh: $1 did not start" >&2; exit 99; }
}

S=$T/src
O=$T/o
mkdir -p "$S" "$O"
# No qemu-nbd that vma started left running (their command lines start
# with --format= and name $T; the test's own servers use -f).
no_qemu_nbd() { ! pgrep -f "qemu-nbd --format=.*$T/" >/dev/null; }
out_empty() {
    check "nothing left in the output directory: $(ls -A "$O" | tr '\n' ' ')" \
        [ -z "$(ls -A "$O")" ]
}
# A failed create: one line, nothing left, nothing running.
expect_clean_failure() {
    expect_failure
    out_empty
    check "no qemu-nbd left running" no_qemu_nbd
}

# roundtrip NAME FMT IMAGE: create from IMAGE through -d format=FMT, then
# extract and compare with qemu-img's raw view of it.
roundtrip() {
    local name=$1 fmt=$2 img=$3
    case_ "create from $name"
    rm -rf "$O"/*
    run "$VMA" create "$O/a.vma" -d "format=$fmt:drive-scsi0=$img"
    expect_ok
    run "$VMA" extract "$O/a.vma" "$O/x"
    expect_rc 0
    qemu-img convert -O raw -f "$fmt" "$img" "$T/want.raw" 2>/dev/null ||
        qemu-img convert -O raw "$img" "$T/want.raw"
    check "$name: extracted disk equals qemu-img convert -O raw" \
        cmp -s "$O/x/disk-drive-scsi0.raw" "$T/want.raw"
    check "no qemu-nbd left running" no_qemu_nbd
}

# --- the sources ----------------------------------------------------------

data "$S/base.raw" 3145728 00          # 3 MiB
data "$S/other.raw" 1048576 01
# qcow2 over a raw backing file: the backing data shows through except
# where the overlay wrote (1 MiB at 1 MiB) or zeroed (64 KiB at 2 MiB).
qemu-img create -q -f qcow2 -b "$S/base.raw" -F raw "$S/top.qcow2" 3M
qemu-io -f qcow2 -c "write -P 0x5a 1M 1M" -c "write -z 2M 64k" "$S/top.qcow2" >/dev/null ||
    { echo "nbd_create.sh: qemu-io failed" >&2; exit 99; }
for fmt in vmdk vdi vhdx qed; do
    qemu-img convert -O $fmt -f raw "$S/base.raw" "$S/d.$fmt" ||
        { echo "nbd_create.sh: cannot make a $fmt image" >&2; exit 99; }
done

# --- round trips ------------------------------------------------------------

roundtrip "qcow2 with a backing file" qcow2 "$S/top.qcow2"
check "the backing file shows through" \
    cmp -s -n 1048576 "$O/x/disk-drive-scsi0.raw" "$S/base.raw"
for fmt in vmdk vdi vhdx qed; do
    roundtrip "$fmt" $fmt "$S/d.$fmt"
done

case_ "one archive from a raw file (direct) and a qcow2 (NBD)"
rm -rf "$O"/*
run "$VMA" create "$O/a.vma" -d "format=raw:drive-scsi0=$S/other.raw" \
    -d "format=qcow2:drive-scsi1=$S/top.qcow2"
expect_ok
run "$VMA" extract "$O/a.vma" "$O/x"
expect_rc 0
qemu-img convert -O raw "$S/top.qcow2" "$T/want.raw"
check "raw disk" cmp -s "$O/x/disk-drive-scsi0.raw" "$S/other.raw"
check "qcow2 disk" cmp -s "$O/x/disk-drive-scsi1.raw" "$T/want.raw"

# An nbd+unix:// export of qemu-nbd --persistent, and one of nbdkit memory.
serve "$T/q.sock" qemu-nbd --persistent -r -f qcow2 -k "$T/q.sock" "$S/top.qcow2"
roundtrip "nbd+unix:// (qemu-nbd --persistent)" raw "nbd+unix:///?socket=$T/q.sock"
qemu-img convert -O raw "$S/top.qcow2" "$T/top.raw"
check "the export is the qcow2 with its backing file" cmp -s "$T/want.raw" "$T/top.raw"
case_ "the persistent export serves a second create"
run "$VMA" create "$O/b.vma" -d "format=raw:drive-scsi0=nbd+unix:///?socket=$T/q.sock"
expect_ok

serve "$T/m.sock" nbdkit -f -U "$T/m.sock" memory 4M
qemu-io -f raw -c "write -P 0x33 64k 128k" -c "write -P 0x44 3M 4k" \
    "nbd+unix:///?socket=$T/m.sock" >/dev/null || { echo "nbd_create.sh: qemu-io failed" >&2; exit 99; }
roundtrip "nbd+unix:// (nbdkit memory)" raw "nbd+unix:///?socket=$T/m.sock"
check "the export holds the data written" \
    [ "$(od -An -tx1 -j 65536 -N 1 "$O/x/disk-drive-scsi0.raw" | tr -d ' ')" = 33 ]

# An export whose size is no multiple of 512 (nor of a cluster): recorded
# rounded up to 512, the tail stored as zeros.
serve "$T/p.sock" nbdkit -f -U "$T/p.sock" pattern size=1000001
case_ "create from an export of 1000001 bytes"
rm -rf "$O"/*
run "$VMA" create "$O/a.vma" -d "format=raw:odd=nbd+unix:///?socket=$T/p.sock"
expect_ok
run "$VMA" list "$O/a.vma"
check "recorded size 1000448" grep -q "size: 1000448 devname: odd" "$T/out"
run "$VMA" extract "$O/a.vma" "$O/x"
qemu-img convert -O raw -f raw "nbd+unix:///?socket=$T/p.sock" "$T/want.raw"
truncate -s 1000448 "$T/want.raw"
check "the export's bytes, then zeros" cmp -s "$O/x/disk-odd.raw" "$T/want.raw"
stop_servers

# --- holes and zero extents are not read ------------------------------------

# 8 GiB of qcow2 with 2 MiB of data: the archive holds the data only.
qemu-img create -q -f qcow2 "$S/big.qcow2" 8G
qemu-io -f qcow2 -c "write -P 0x11 1G 1M" -c "write -P 0x22 5G 1M" "$S/big.qcow2" >/dev/null
case_ "create from an 8 GiB qcow2 with 2 MiB of data"
rm -rf "$O"/*
run "$VMA" create "$O/a.vma" -d "format=qcow2:big=$S/big.qcow2"
expect_ok
check "the archive is small ($(stat -c %s "$O/a.vma") bytes)" \
    [ "$(stat -c %s "$O/a.vma")" -lt 4194304 ]
run "$VMA" verify -v "$O/a.vma"
expect_rc 0
check "verify counts 8 GiB read, all but 2 MiB sparse" \
    grep -q "^total bytes read 8589934592, sparse bytes 8587837440 " "$T/out"

# A 1 GiB sparse raw file served by nbdkit's file plugin (SEEK_DATA
# extents) through its log filter: the only reads are of the two data
# ranges, 64 KiB at 192 KiB and 1 MiB at 512 MiB.
truncate -s 1G "$S/sparse.raw"
dd if="$S/base.raw" of="$S/sparse.raw" bs=64K count=1 seek=3 conv=notrunc status=none
dd if="$S/base.raw" of="$S/sparse.raw" bs=1M count=1 seek=512 conv=notrunc status=none
serve "$T/l.sock" nbdkit -f -U "$T/l.sock" --filter=log file "$S/sparse.raw" logfile="$T/nbdkit.log"
case_ "holes of an NBD export are not read (nbdkit log filter)"
rm -rf "$O"/*
run "$VMA" create "$O/a.vma" -d "format=raw:d0=nbd+unix:///?socket=$T/l.sock"
expect_ok
stop_servers
run "$VMA" extract "$O/a.vma" "$O/x"
check "equals the sparse file" cmp -s "$O/x/disk-d0.raw" "$S/sparse.raw"
check "block status was asked" grep -q " Extents id=" "$T/nbdkit.log"
# Every Read request lies in [0x30000, 0x40000) or [0x20000000, 0x20100000).
sed -n 's/.* Read id=[0-9]* offset=\(0x[0-9a-f]*\) count=\(0x[0-9a-f]*\) .*/\1 \2/p' \
    "$T/nbdkit.log" >"$T/reads"
bad=$(while read -r off cnt; do
        s=$((off)) e=$((off + cnt))
        if ! { [ $s -ge $((0x30000)) ] && [ $e -le $((0x40000)) ]; } &&
            ! { [ $s -ge $((0x20000000)) ] && [ $e -le $((0x20100000)) ]; }; then
            echo "$off+$cnt"
        fi
    done <"$T/reads")
reads=$(grep -c " Read id=.* offset=" "$T/nbdkit.log")
check "reads issued ($reads), each parsed" [ "$reads" -gt 0 -a "$(wc -l <"$T/reads")" = "$reads" ]
check "no read outside the data ranges: $bad" [ -z "$bad" ]

# --- image signatures on positional (raw) sources ----------------------------

mk() { qemu-img create -q -f "$@" || { echo "nbd_create.sh: qemu-img create -f $1 failed" >&2; exit 99; }; }
mk qcow2 "$S/i.qcow2" 1M
mk qcow "$S/i.qcow" 1M
mk vmdk "$S/i.vmdk" 1M
mk vmdk -o subformat=monolithicFlat "$S/desc.vmdk" 1M
mk vdi "$S/i.vdi" 1M
mk vhdx "$S/i.vhdx" 1M
mk qed "$S/i.qed" 1M
mk vpc "$S/i.vpc" 1M
mk vpc -o subformat=fixed "$S/fixed.vpc" 1M
for spec in qcow2:i.qcow2 qcow:i.qcow vmdk:i.vmdk vmdk:desc.vmdk vdi:i.vdi vhdx:i.vhdx \
    qed:i.qed vpc:i.vpc vpc:fixed.vpc; do
    fmt=${spec%%:*} file=$S/${spec#*:}
    case_ "positional $fmt image ${spec#*:} refused"
    rm -rf "$O"/*
    run "$VMA" create "$O/a.vma" "drive-scsi0=$file"
    expect_clean_failure
    expect_err "vma: $file looks like a $fmt image, not a raw disk: back it up with '-d format=$fmt:drive-scsi0=$file' (or 'format=raw' for its bytes as they are)
"
done
case_ "positional source without a name, refused with its disk<N> name"
run "$VMA" create "$O/a.vma" "$S/other.raw" "$S/i.qcow2"
expect_clean_failure
expect_err_has "'-d format=qcow2:disk1=$S/i.qcow2'"

case_ "format=raw backs up an image's bytes as they are"
rm -rf "$O"/*
run "$VMA" create "$O/a.vma" -d "format=raw:drive-scsi0=$S/i.qcow2"
expect_ok
run "$VMA" extract "$O/a.vma" "$O/x"
cp "$S/i.qcow2" "$T/want.raw"
truncate -s %512 "$T/want.raw"
check "the qcow2 file's bytes" cmp -s "$O/x/disk-drive-scsi0.raw" "$T/want.raw"

case_ "a raw file without a signature is taken positionally"
rm -rf "$O"/*
run "$VMA" create "$O/a.vma" "drive-scsi0=$S/base.raw"
expect_ok

# --- errors -------------------------------------------------------------------

case_ "nonexistent image"
rm -rf "$O"/*
run "$VMA" create "$O/a.vma" -d "format=qcow2:drive-scsi0=$S/nope.qcow2"
expect_clean_failure
expect_err_has "$S/nope.qcow2: cannot open as qcow2:"
expect_err_has "No such file or directory"

case_ "wrong format= (vmdk on a qcow2)"
run "$VMA" create "$O/a.vma" -d "format=vmdk:drive-scsi0=$S/top.qcow2"
expect_clean_failure
expect_err_has "$S/top.qcow2: cannot open as vmdk:"

case_ "unknown format="
run "$VMA" create "$O/a.vma" -d "format=nosuch:drive-scsi0=$S/top.qcow2"
expect_clean_failure
expect_err_has "cannot open as nosuch:"

case_ "image locked by a running writer (qemu-nbd without -r)"
qemu-img create -q -f qcow2 "$S/locked.qcow2" 1M
serve "$T/w.sock" qemu-nbd --persistent -f qcow2 -k "$T/w.sock" "$S/locked.qcow2"
run "$VMA" create "$O/a.vma" -d "format=qcow2:drive-scsi0=$S/locked.qcow2"
stop_servers
expect_failure
out_empty
check "no qemu-nbd of vma left running" no_qemu_nbd
expect_err_has "in use by another process"
expect_err_has "lock"

case_ "qemu-nbd not installed (PATH without it)"
mkdir -p "$T/emptybin"
# The runner (valgrind) itself must still be found.
if [ -n "${VMA_RUNNER:-}" ]; then
    printf '#!/bin/sh\nexec %q "$@"\n' "$(command -v "${VMA_RUNNER%% *}")" \
        >"$T/emptybin/${VMA_RUNNER%% *}" && chmod +x "$T/emptybin/${VMA_RUNNER%% *}"
fi
PATH=$T/emptybin run "$VMA" create "$O/a.vma" -d "format=qcow2:drive-scsi0=$S/top.qcow2"
expect_clean_failure
expect_err_has "qemu-nbd not found"
expect_err_has "qemu-utils"

case_ "NBD URI of a socket where nothing listens"
run "$VMA" create "$O/a.vma" -d "format=raw:drive-scsi0=nbd+unix:///?socket=$T/none.sock"
expect_clean_failure

case_ "a missing second image leaves no archive and stops the first qemu-nbd"
run "$VMA" create "$O/a.vma" -d "format=qcow2:drive-scsi0=$S/top.qcow2" \
    -d "format=qcow2:drive-scsi1=$S/nope.qcow2"
expect_clean_failure
expect_err_has "nope.qcow2"

# sigterm_create SPEC [PATTERN]: SIGTERM a create from SPEC one second
# after its start (or after a qemu-nbd matching PATTERN runs).
sigterm_create() {
    rm -rf "$O"/*
    "$VMA" create "$O/a.vma" -d "$1" >"$T/out" 2>"$T/err" &
    pid=$!
    if [ -n "${2:-}" ]; then
        for i in $(seq 300); do pgrep -f "$2" >/dev/null && break; sleep 0.1; done
        check "vma started qemu-nbd" pgrep -f "$2"
    fi
    # A stalled server: wait until the client is connected (the socket's
    # path shows twice in /proc/net/unix: listening and accepted), so that
    # the signal comes during the handshake even when vma starts slowly
    # (valgrind on a loaded machine).
    if [ -n "${3:-}" ]; then
        for i in $(seq 600); do
            [ "$(grep -c -F "$3" /proc/net/unix)" -ge 2 ] && break
            sleep 0.1
        done
        check "the client reached the stalled server" \
            test "$(grep -c -F "$3" /proc/net/unix)" -ge 2
    fi
    sleep 1
    kill -TERM $pid
    check "create ended long before the server's delay" ends_within 30 $pid
    wait $pid
    RC=$?
    [ -n "${VMA_RUNNER:-}" ] && sed -i '/^--[0-9]*-- /d' "$T/err"
    stop_servers
    expect_clean_failure
    expect_err "vma: interrupted by signal
"
}

# SIGTERM while the source opens: the NBD server stalls its handshake for
# 120 s, reached directly (URI) and by qemu-nbd (nbd:unix: path).
for spec in "nbd+unix:///?socket=$T/stall.sock" "nbd:unix:$T/stall.sock"; do
    rm -f "$T/stall.sock"
    serve "$T/stall.sock" nbdkit -f -U "$T/stall.sock" --filter=delay memory 1M delay-open=120
    case_ "SIGTERM while the handshake of $spec stalls"
    sigterm_create "format=raw:drive-scsi0=$spec" "" "$T/stall.sock"
done

# SIGTERM while reads are in flight: qemu-nbd serves an NBD export (QEMU's
# nbd:unix: protocol path) whose every read takes 5 s.
serve "$T/slow.sock" nbdkit -f -U "$T/slow.sock" --filter=delay pattern size=64M delay-read=5
case_ "SIGTERM during create from a slow NBD source"
sigterm_create "format=raw:drive-scsi0=nbd:unix:$T/slow.sock" "qemu-nbd --format=.*$T/slow.sock"

done_
