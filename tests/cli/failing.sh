#!/bin/bash
# Failing environments, without root: `create` into a pipe or
# FIFO whose reader exits early, from a source that fails to read (EIO) or
# shrinks while it is read (an LD_PRELOAD shim, tests/preload_shim.c), and
# SIGINT/SIGTERM during `create` and `extract` in each of their waits (an
# idle pipe, a FIFO nobody opens, a throttle, an exec: command that does
# not read or does not exit). Every case: exit 2, one
# clear stderr line, no success claimed, partial output removed.
# Usage: failing.sh <vma> <golden-dir> <vma_craft> <libvmashim.so>
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

SHIM=${4:-}
if [ -z "$SHIM" ] || [ ! -f "$SHIM" ]; then
    echo "failing.sh: no preload shim given (4th argument)" >&2
    exit 99
fi
A=$G/basic.vma
# ASan builds: the shim comes before the ASan runtime in the library list.
SHIM_ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

# data FILE BYTES: deterministic incompressible bytes (AES-CTR of zeros).
data() {
    head -c "$2" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
            -iv 00000000000000000000000000000000 >"$1" 2>/dev/null
    [ "$(stat -c %s "$1")" = "$2" ] || { echo "failing.sh: cannot make $1" >&2; exit 99; }
}

mkdir -p "$T/src"
data "$T/src/d4.raw" 4194304    # 4 MiB, every block data
data "$T/src/d64.raw" 67108864  # 64 MiB, for the signal tests
# 1 MiB of data, then a hole up to 8 MiB
head -c 1048576 "$T/src/d4.raw" >"$T/src/holey.raw"
truncate -s 8M "$T/src/holey.raw"

# Every archive is written into $O (stdout goes to $T/out, as in common.sh).
O=$T/o
mkdir -p "$O"
out_empty() {
    check "nothing left in the output directory: $(ls -A "$O" | tr '\n' ' ')" \
        [ -z "$(ls -A "$O")" ]
}

# shim_run VAR=VALUE... CMD...: run CMD with the shim preloaded.
shim_run() {
    env LD_PRELOAD="$SHIM" ASAN_OPTIONS="$SHIM_ASAN_OPTIONS" "$@" >"$T/out" 2>"$T/err"
    RC=$?
}

# --- create into a pipe whose reader exits early ------------------------

case_ "create into exec:head -c 1000 (reader exits early)"
run "$VMA" create "exec:head -c 1000 >/dev/null" drive-scsi0="$T/src/d4.raw"
expect_failure
expect_err_has "exited with status 0 before reading the whole archive"

case_ "create --compress=zstd into exec:head -c 1000"
run "$VMA" create --compress=zstd "exec:head -c 1000 >/dev/null" drive-scsi0="$T/src/d4.raw"
expect_failure
expect_err_has "exited with status 0 before reading the whole archive"

case_ "create into exec: that reads nothing"
run "$VMA" create "exec:exec 0<&-; sleep 0" drive-scsi0="$T/src/d4.raw"
expect_failure

mkfifo "$T/pipe.fifo"
case_ "create into a FIFO whose reader exits after 1000 bytes"
head -c 1000 <"$T/pipe.fifo" >/dev/null &
reader=$!
run "$VMA" create "$T/pipe.fifo" drive-scsi0="$T/src/d4.raw"
wait $reader
expect_failure
expect_err_has "Broken pipe"
check "the FIFO is still a FIFO" [ -p "$T/pipe.fifo" ]

case_ "create into a FIFO whose reader exits at once"
(: <"$T/pipe.fifo") &
reader=$!
run "$VMA" create "$T/pipe.fifo" -c "$G/basic.conf" drive-scsi0="$T/src/d4.raw"
wait $reader
expect_failure
expect_err_has "Broken pipe"

# --- a source that fails to read ----------------------------------------

for at in 0 1052672 1050000 4194303; do
    case_ "create from a source with EIO at byte $at"
    shim_run VMA_SHIM_PATH="$T/src/d4.raw" VMA_SHIM_EIO_AT=$at \
        "$VMA" create "$O/eio.vma" drive-scsi0="$T/src/d4.raw"
    expect_failure
    expect_err "vma: read error on the source of device 'drive-scsi0' at offset $at: Input/output error
"
    check "no partial archive" [ ! -e "$O/eio.vma" ]
    out_empty
done

case_ "create --compress=gzip from a source with EIO, second device"
shim_run VMA_SHIM_PATH="$T/src/d4.raw" VMA_SHIM_EIO_AT=2097152 \
    "$VMA" create --compress=gzip "$O/eio.vma.gz" -c "$G/basic.conf" \
    drive-scsi0="$T/src/holey.raw" drive-scsi1="$T/src/d4.raw"
expect_failure
expect_err "vma: read error on the source of device 'drive-scsi1' at offset 2097152: Input/output error
"
out_empty

case_ "create from a source with EIO into exec:"
shim_run VMA_SHIM_PATH="$T/src/d4.raw" VMA_SHIM_EIO_AT=65536 \
    "$VMA" create "exec:cat > '$O/exec.vma'" drive-scsi0="$T/src/d4.raw"
expect_failure
expect_err_has "Input/output error"
# the command's own output file is not ours to remove; nothing is claimed
check "no success claimed on stdout" [ ! -s "$T/out" ]
rm -f "$O/exec.vma"

# --- a source that shrinks while it is read -----------------------------

case_ "create from a source cut from 4 MiB to 1 MiB + 100 while read"
cp "$T/src/d4.raw" "$T/src/shrink.raw"
shim_run VMA_SHIM_PATH="$T/src/shrink.raw" VMA_SHIM_SHRINK_AT=2097152 \
    VMA_SHIM_SHRINK_TO=1048676 \
    "$VMA" create "$O/shrink.vma" drive-scsi0="$T/src/shrink.raw"
expect_failure
expect_err "vma: source of device 'drive-scsi0' shrank while read: it ends at 2097152 of 4194304 bytes
"
check "the shim did cut the source" [ "$(stat -c %s "$T/src/shrink.raw")" = 1048676 ]
out_empty

case_ "create from a sparse source cut into its hole while read"
cp --sparse=always "$T/src/holey.raw" "$T/src/shrink2.raw"
shim_run VMA_SHIM_PATH="$T/src/shrink2.raw" VMA_SHIM_SHRINK_AT=0 VMA_SHIM_SHRINK_TO=4194304 \
    "$VMA" create --compress=zstd "$O/shrink2.vma.zst" drive-scsi0="$T/src/shrink2.raw"
expect_failure
expect_err "vma: source of device 'drive-scsi0' shrank while read: 4194304 of 8388608 bytes
"
out_empty

case_ "create from a source cut to 0 at the first read"
cp "$T/src/d4.raw" "$T/src/shrink3.raw"
shim_run VMA_SHIM_PATH="$T/src/shrink3.raw" VMA_SHIM_SHRINK_AT=0 VMA_SHIM_SHRINK_TO=0 \
    "$VMA" create "$O/shrink3.vma" drive-scsi0="$T/src/shrink3.raw"
expect_failure
expect_err_has "shrank while read"
out_empty

# --- SIGINT and SIGTERM during create -----------------------------------

command -v pgrep >/dev/null || { echo "failing.sh: pgrep is missing (Debian package procps)" >&2; exit 99; }

# wait_for_process PATTERN: until a process matches PATTERN (pgrep -f).
wait_for_process() {
    local i
    for i in $(seq 1200); do
        pgrep -f "$1" >/dev/null && return 0
        sleep 0.1
    done
    return 1
}

no_process() { ! pgrep -f "$1" >/dev/null; }

# ends_within_cmd SECONDS PATTERN: whether every process matching PATTERN
# (pgrep -f) is gone within SECONDS.
ends_within_cmd() {
    local i
    for i in $(seq $(($1 * 10))); do
        no_process "$2\$" && return 0
        sleep 0.1
    done
    return 1
}

# stop_with SIG PID [keep-stdout]: send SIG; PID must end within 20 s
# (else it is killed) and fail as a signal makes it: exit 2, the one line
# "interrupted by signal".
stop_with() {
    kill -$1 $2
    check "vma ended at once after SIG$1" ends_within 20 $2
    kill -KILL $2 2>/dev/null
    wait $2
    RC=$?
    expect_failure ${3:-}
    expect_err "vma: interrupted by signal
"
}

# wait_for_open PID PATH: until PID has PATH open (120 s at most).
wait_for_open() {
    local i
    for i in $(seq 1200); do
        ls -l /proc/$1/fd 2>/dev/null | grep -qF -- "-> $2" && return 0
        sleep 0.1
    done
    return 1
}

# wait_for_line FILE REGEX: until a line of FILE matches (120 s at most).
wait_for_line() {
    local i
    for i in $(seq 1200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

for sig in INT TERM; do
    for compress in none zstd; do
        case_ "SIG$sig during create (--compress=$compress)"
        rm -f "$T/ready"
        env LD_PRELOAD="$SHIM" ASAN_OPTIONS="$SHIM_ASAN_OPTIONS" VMA_SHIM_PATH="$T/src/d64.raw" \
            VMA_SHIM_DELAY_US=20000 VMA_SHIM_READY="$T/ready" \
            "$VMA" create --compress=$compress "$O/sig.vma" -c "$G/basic.conf" \
            drive-scsi0="$T/src/d64.raw" >"$T/out" 2>"$T/err" &
        pid=$!
        # the shim makes "ready" at the first read of the source: the
        # archive is open and the handlers are in place
        check "create started reading" wait_for "$T/ready"
        kill -$sig $pid
        wait $pid
        RC=$?
        expect_failure
        expect_err "vma: interrupted by signal
"
        check "no partial archive" [ ! -e "$O/sig.vma" ]
        out_empty
    done
done

# --- SIGINT and SIGTERM during extract ----------------------------------

# From an idle pipe (tmp-disk files made, then nothing moves): see the
# end of this file.

# With a restore map that throttles the writes to 1 KiB/s (8.5 MiB take
# over 2 hours, one cluster a minute): the signal comes while
# vma sleeps in the throttle, and must end it at once. Once with a group,
# once with private limits.
truncate -s 8388608 "$T/t0.raw"
truncate -s 540672 "$T/t1.raw"
cat >"$T/map.group" <<EOF
throttling.bps=1024:throttling.group=g:1:drive-scsi0=$T/t0.raw
throttling.group=g:0:drive-efidisk0=$T/t1.raw
done
EOF
cat >"$T/map.private" <<EOF
throttling.bps=1024:1:drive-scsi0=$T/t0.raw
throttling.bps=1024:0:drive-efidisk0=$T/t1.raw
done
EOF
for map in group private; do
    for sig in INT TERM; do
        case_ "SIG$sig during extract -r (throttled, $map limit)"
        "$VMA" extract -r "$T/map.$map" "$A" "$O/y" >"$T/out" 2>"$T/err" &
        pid=$!
        check "extract wrote the configs" wait_for "$O/y/qemu-server.fw"
        sleep 1 # in the throttle's first wait by now
        stop_with $sig $pid keep-stdout
        check "target directory removed" [ ! -e "$O/y" ]
        check "the map's targets are the caller's and stay" [ -f "$T/t0.raw" -a -f "$T/t1.raw" ]
        out_empty
    done
done

# A FIFO map that no writer ever opens: vma waits for it, and the signal
# ends the wait.
for sig in INT TERM; do
    case_ "SIG$sig while extract -r waits for a writer of its map FIFO"
    rm -f "$T/never.fifo"
    mkfifo "$T/never.fifo"
    "$VMA" extract -r "$T/never.fifo" "$A" "$O/n" >"$T/out" 2>"$T/err" &
    pid=$!
    check "extract printed the list" wait_for_line "$T/out" "^CTIME: "
    sleep 0.3 # in the wait for the map by now
    stop_with $sig $pid keep-stdout
    check "target directory removed" [ ! -e "$O/n" ]
    out_empty
done

# FIFOs whose other end nobody opens: `create` waits for a reader of its
# archive, `extract` for a writer; the signal ends either wait.
for sig in INT TERM; do
    case_ "SIG$sig while create waits for a reader of its FIFO"
    rm -f "$T/noreader.fifo"
    mkfifo "$T/noreader.fifo"
    "$VMA" create "$T/noreader.fifo" drive-scsi0="$T/src/d4.raw" >"$T/out" 2>"$T/err" &
    pid=$!
    # the source is opened after the handlers are set, before the archive
    check "create opened its source" wait_for_open $pid "$T/src/d4.raw"
    sleep 0.3 # in the wait by now
    stop_with $sig $pid
    check "the FIFO is still a FIFO" [ -p "$T/noreader.fifo" ]

    case_ "SIG$sig while extract waits for a writer of its archive FIFO"
    rm -f "$T/nowriter.fifo"
    mkfifo "$T/nowriter.fifo"
    "$VMA" extract "$T/nowriter.fifo" "$O/w" >"$T/out" 2>"$T/err" &
    pid=$!
    check "extract opened the FIFO" wait_for_open $pid "$T/nowriter.fifo"
    stop_with $sig $pid
    out_empty
done

# --- signals while a pipe is idle ----------------------------------------
# The other end of the pipe is open, but nothing moves: vma waits in the
# library, not between clusters, and the signal must still stop it at once
# (the handler cancels the reader or writer, which wakes the wait).

for ext in vma vma.zst vma.lzo; do
    for sig in INT TERM; do
        case_ "SIG$sig during extract of basic.$ext from an idle pipe"
        rm -f "$T/idle.fifo"
        mkfifo "$T/idle.fifo"
        "$VMA" extract - "$O/idle" <"$T/idle.fifo" >"$T/out" 2>"$T/err" &
        pid=$!
        exec 3>"$T/idle.fifo"
        size=$(stat -c %s "$G/basic.$ext")
        head -c $((size / 2)) "$G/basic.$ext" >&3
        check "extract made its files" wait_for "$O/idle/tmp-disk-drive-efidisk0.raw"
        kill -$sig $pid
        check "extract ended at once, the writer still idle" ends_within 20 $pid
        exec 3>&-
        wait $pid
        RC=$?
        expect_failure keep-stdout
        expect_err "vma: interrupted by signal
"
        check "target directory removed" [ ! -e "$O/idle" ]
        out_empty
    done
done

# A command that never reads: vma blocks writing into the full pipe; the
# signal stops it, and the command is terminated too.
for compress in none zstd; do
    case_ "SIGTERM during create into a stalled exec: command (--compress=$compress)"
    stall="sleep 987$$"
    "$VMA" create --compress=$compress "exec:$stall" -c "$G/basic.conf" \
        drive-scsi0="$T/src/d64.raw" >"$T/out" 2>"$T/err" &
    pid=$!
    check "the command started" wait_for_process "^$stall"
    sleep 0.5 # vma fills the pipe and blocks (or is about to)
    kill -TERM $pid
    check "create ended at once" ends_within 20 $pid
    wait $pid
    RC=$?
    expect_failure
    expect_err "vma: interrupted by signal
"
    check "the stalled command (and its shell) was terminated" no_process "$stall\$"
    out_empty
done

# A command that reads everything but never exits: vma has written the
# whole archive and waits for the command; the signal ends the wait, and
# the command's whole process group is terminated.
for sig in INT TERM; do
    case_ "SIG$sig while create waits for an exec: command that does not exit"
    linger="sleep 986$$"
    "$VMA" create "exec:cat >/dev/null; $linger" -c "$G/basic.conf" \
        drive-scsi0="$T/src/d4.raw" >"$T/out" 2>"$T/err" &
    pid=$!
    # the sleep starts once cat saw the end of the archive
    check "the archive was written, the command lingers" wait_for_process "^$linger\$"
    stop_with $sig $pid
    check "the command's processes are gone" ends_within_cmd 20 "$linger"
    for p in $(pgrep -f "$linger\$"); do kill -KILL $p; done # after a failure only
    out_empty
done


# --- a host without the libraries loaded on first use -------------------

case_ "extract -r into qcow2 without libnbd.so.0"
printf 'format=qcow2:0:drive-scsi0=%s\n' "$T/none.qcow2" >"$T/nolib.map"
rm -rf "$T/nolib"
shim_run VMA_SHIM_NO_LIB=libnbd.so.0 "$VMA" extract -r "$T/nolib.map" "$A" "$T/nolib"
expect_failure keep-stdout # the archive's CFG and DEV lines, as the deployed tool prints
expect_err_has "cannot load libnbd.so.0, needed for NBD and QEMU image formats (install libnbd0)"
check "no disk written" [ -z "$(ls -A "$T/nolib" 2>/dev/null)" ]

case_ "checksum without libcrypto.so.3"
shim_run VMA_SHIM_NO_LIB=libcrypto.so.3 "$VMA" checksum "$A"
expect_failure
expect_err_has "cannot load libcrypto.so.3 for SHA-256 (install libssl3)"

case_ "verify needs neither: it runs without both"
shim_run VMA_SHIM_NO_LIB=libnbd.so.0 "$VMA" verify "$A"
expect_ok
shim_run VMA_SHIM_NO_LIB=libcrypto.so.3 "$VMA" verify "$A"
expect_ok

done_
