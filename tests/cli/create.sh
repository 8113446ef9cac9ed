#!/bin/bash
# vma create: device forms (-d format=raw:NAME=PATH, NAME=PATH, PATH),
# configs by base name, outputs (new file, existing file refused, FIFO,
# exec:), -v lines, errors, and create -> verify -> extract round trips.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

mkdir -p "$T/src" "$T/cfg/dir"
# a.raw: 1 MiB, cluster 0 all 0xff, clusters 1..15 a hole
head -c 65536 /dev/zero | tr '\0' '\377' >"$T/src/a.raw"
truncate -s 1048576 "$T/src/a.raw"
# b.raw: 200000 bytes (not a multiple of 512: recorded as 200192), no zeros
head -c 200000 /dev/zero | tr '\0' '\001' >"$T/src/b.raw"
# c.raw: mixed content with zero blocks inside, 3 MiB + 4096
{
    head -c 300000 /dev/urandom
    head -c 200000 /dev/zero
    seq 1 40000
    head -c 1000000 /dev/zero
    head -c 70000 /dev/urandom
} >"$T/src/c.raw"
truncate -s $((3 * 1048576 + 4096)) "$T/src/c.raw"
cp "$G/basic.conf" "$T/cfg/qemu-server.conf"
printf '[OPTIONS]\nenable: 1\n' >"$T/cfg/dir/100.fw"
A=$T/src/a.raw
B=$T/src/b.raw
C=$T/src/c.raw
SA=1048576
SB=200192
SC=$((3 * 1048576 + 4096))
CTIME_RE='^CTIME: (Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4}$'

# list_is ARCHIVE EXPECTED-LINES-WITHOUT-CTIME
list_is() {
    run "$VMA" list "$1"
    expect_ok
    head -n -1 "$T/out" >"$T/got.list"
    printf '%s' "$2" >"$T/want.list"
    check "list lines: $(diff "$T/want.list" "$T/got.list" | tr '\n' ' ')" \
        cmp -s "$T/want.list" "$T/got.list"
    check "CTIME line: $(tail -n 1 "$T/out")" grep -qE "$CTIME_RE" <(tail -n 1 "$T/out")
}

# roundtrip ARCHIVE NAME=SOURCE...: verify, extract, compare every disk
# with its source (plus zero padding to the recorded size).
roundtrip() {
    local archive=$1 d=$T/rt.$RANDOM$RANDOM
    shift
    run "$VMA" verify "$archive"
    expect_ok
    expect_out_empty
    run "$VMA" extract "$archive" "$d"
    expect_ok
    local spec name src size
    for spec in "$@"; do
        name=${spec%%=*}
        src=${spec#*=}
        size=$(stat -c %s "$src")
        local rec=$(((size + 511) / 512 * 512))
        check "$name: size $(stat -c %s "$d/disk-$name.raw"), expected $rec" \
            [ "$(stat -c %s "$d/disk-$name.raw")" = $rec ]
        check "$name: content" cmp -s -n "$size" "$src" "$d/disk-$name.raw"
        check "$name: zero padding" \
            cmp -s -i "$size" -n $((rec - size)) "$d/disk-$name.raw" /dev/zero
    done
    rm -rf "$d"
}

case_ "create NAME=PATH with configs"
run "$VMA" create "$T/p.vma" -c "$T/cfg/qemu-server.conf" -c "$T/cfg/dir/100.fw" \
    drive-scsi0="$A" drive-virtio1="$B"
expect_ok
expect_out_empty
list_is "$T/p.vma" "CFG: size: 383 name: qemu-server.conf
CFG: size: 20 name: 100.fw
DEV: dev_id=1 size: $SA devname: drive-scsi0
DEV: dev_id=2 size: $SB devname: drive-virtio1
"
roundtrip "$T/p.vma" drive-scsi0="$A" drive-virtio1="$B"
run "$VMA" config "$T/p.vma"
expect_ok
expect_out_file "$T/cfg/qemu-server.conf"
run "$VMA" config "$T/p.vma" -c 100.fw
expect_ok
expect_out_file "$T/cfg/dir/100.fw"

case_ "create bare PATHs: disk0, disk1"
run "$VMA" create "$T/bare.vma" "$A" "$B" "$C"
expect_ok
list_is "$T/bare.vma" "DEV: dev_id=1 size: $SA devname: disk0
DEV: dev_id=2 size: $SB devname: disk1
DEV: dev_id=3 size: $SC devname: disk2
"
roundtrip "$T/bare.vma" disk0="$A" disk1="$B" disk2="$C"

case_ "create NAME=PATH and PATH mixed (legacy form)"
run "$VMA" create "$T/legacy.vma" -c "$T/cfg/qemu-server.conf" drive-virtio0="$C" "$B"
expect_ok
list_is "$T/legacy.vma" "CFG: size: 383 name: qemu-server.conf
DEV: dev_id=1 size: $SC devname: drive-virtio0
DEV: dev_id=2 size: $SB devname: disk1
"
roundtrip "$T/legacy.vma" drive-virtio0="$C" disk1="$B"

case_ "create -d format=raw:NAME=PATH"
run "$VMA" create "$T/d.vma" -c "$T/cfg/qemu-server.conf" \
    -d format=raw:drive-scsi0="$C" -d format=raw:drive-efidisk0="$B"
expect_ok
list_is "$T/d.vma" "CFG: size: 383 name: qemu-server.conf
DEV: dev_id=1 size: $SC devname: drive-scsi0
DEV: dev_id=2 size: $SB devname: drive-efidisk0
"
roundtrip "$T/d.vma" drive-scsi0="$C" drive-efidisk0="$B"

case_ "create configs only"
run "$VMA" create "$T/cfgonly.vma" -c "$T/cfg/qemu-server.conf"
expect_ok
list_is "$T/cfgonly.vma" "CFG: size: 383 name: qemu-server.conf
"
run "$VMA" verify -v "$T/cfgonly.vma"
expect_ok
check "verify -v of a diskless archive" \
    [ "$(tail -n 1 "$T/out")" = "vma archive contains no image data" ]

case_ "create with nothing at all (readable, unlike the deployed tool's)"
run "$VMA" create "$T/nothing.vma"
expect_ok
list_is "$T/nothing.vma" ""
run "$VMA" verify "$T/nothing.vma"
expect_ok

case_ "create to exec:"
run "$VMA" create "exec:cat > '$T/exec.vma'" -c "$T/cfg/qemu-server.conf" drive-scsi0="$C"
expect_ok
expect_out_empty
roundtrip "$T/exec.vma" drive-scsi0="$C"

case_ "create to exec: that fails"
run "$VMA" create "exec:cat >/dev/null; exit 1" drive-scsi0="$A"
expect_failure

case_ "create to a FIFO"
mkfifo "$T/out.fifo"
"$VMA" verify -v "$T/out.fifo" >"$T/fifo.out" 2>"$T/fifo.err" &
pid=$!
run "$VMA" create "$T/out.fifo" drive-scsi0="$A"
expect_ok
# a create that never opened the FIFO leaves verify blocked in open()
[ "$RC" = 0 ] || kill $pid 2>/dev/null
wait $pid
vrc=$?
check "verify of the FIFO stream exits 0 ($(cat "$T/fifo.err"))" [ $vrc = 0 ]
check "verify of the FIFO stream saw the device" \
    grep -q "^DEV: dev_id=1 size: $SA devname: drive-scsi0\$" "$T/fifo.out"
check "the FIFO is still a FIFO" [ -p "$T/out.fifo" ]

case_ "create -v"
run "$VMA" create -v "$T/v.vma" drive-scsi0="$A"
expect_rc 0
expect_out_empty
{
    echo "progress 0% 0/$SA 0"
    for k in $(seq 1 16); do
        echo "progress $((k * 100 / 16))% $((k * 65536))/$SA $(((k - 1) * 65536))"
    done
    echo "image drive-scsi0: size=$SA zeros=$((15 * 65536)) saved=65536"
} >"$T/want.err"
check "create -v lines: $(diff "$T/want.err" "$T/err" | head -8 | tr '\n' ' ')" \
    cmp -s "$T/want.err" "$T/err"

case_ "create -v, two devices"
run "$VMA" create -v "$T/v2.vma" -d format=raw:drive-scsi0="$A" -d format=raw:drive-b="$B"
expect_rc 0
expect_out_empty
total=$((SA + SB))
{
    last=-1
    done=0
    zero=0
    emit() {
        local p=$((done * 100 / total))
        [ $p != $last ] && echo "progress $p% $done/$total $zero"
        last=$p
    }
    emit
    for k in $(seq 0 15); do # a.raw: cluster 0 data, the rest zero
        done=$((done + 65536))
        [ $k -gt 0 ] && zero=$((zero + 65536))
        emit
    done
    for lim in 65536 65536 65536 3584; do # b.raw: no zero block
        done=$((done + lim))
        emit
    done
    echo "image drive-scsi0: size=$SA zeros=$((15 * 65536)) saved=65536"
    echo "image drive-b: size=$SB zeros=0 saved=$SB"
} >"$T/want.err"
check "create -v lines (2 devices): $(diff "$T/want.err" "$T/err" | head -8 | tr '\n' ' ')" \
    cmp -s "$T/want.err" "$T/err"

# --- refusals -------------------------------------------------------------

case_ "create onto an existing file"
printf 'precious\n' >"$T/exists.vma"
run "$VMA" create "$T/exists.vma" drive-scsi0="$A"
expect_failure
check "existing file untouched" [ "$(cat "$T/exists.vma")" = precious ]

case_ "create -d without format="
run "$VMA" create "$T/nofmt.vma" -d drive-scsi0="$A"
expect_failure
check "no archive left" [ ! -e "$T/nofmt.vma" ]

case_ "create -d format=qcow2 of a raw file"
run "$VMA" create "$T/qcow.vma" -d format=qcow2:drive-scsi0="$A"
expect_failure
expect_err_has "vma: $A: "
expect_err_has "qcow2" # not a qcow2 image, or built without NBD
check "no archive left" [ ! -e "$T/qcow.vma" ]

case_ "create mixing -d and positional devices"
run "$VMA" create "$T/mix.vma" -d format=raw:drive-scsi0="$A" drive-scsi1="$B"
expect_failure
check "no archive left" [ ! -e "$T/mix.vma" ]

case_ "create with a missing source"
run "$VMA" create "$T/nosrc.vma" drive-scsi0="$T/src/none.raw"
expect_failure
expect_err_has "$T/src/none.raw"
check "no archive left" [ ! -e "$T/nosrc.vma" ]

case_ "create with a missing config"
run "$VMA" create "$T/nocfg.vma" -c "$T/cfg/none.conf" drive-scsi0="$A"
expect_failure
expect_err_has "$T/cfg/none.conf"
check "no archive left" [ ! -e "$T/nocfg.vma" ]

case_ "create with a config over 65535 bytes"
head -c 65536 /dev/zero | tr '\0' 'x' >"$T/cfg/big.conf"
run "$VMA" create "$T/bigcfg.vma" -c "$T/cfg/big.conf" drive-scsi0="$A"
expect_failure
check "no archive left" [ ! -e "$T/bigcfg.vma" ]

case_ "create with two devices of the same name"
run "$VMA" create "$T/dup.vma" drive-scsi0="$A" drive-scsi0="$B"
expect_failure
check "no archive left" [ ! -e "$T/dup.vma" ]

case_ "create with a bad device name"
run "$VMA" create "$T/badname.vma" ..="$A"
expect_failure
check "no archive left" [ ! -e "$T/badname.vma" ]

case_ "create into a missing directory"
run "$VMA" create "$T/no/such/dir.vma" drive-scsi0="$A"
expect_failure

done_
