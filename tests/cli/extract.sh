#!/bin/bash
# vma extract: -d subsets, restore maps (-r) from a plain file and from a
# FIFO, map options and errors, existing directories, vmstate streams,
# cleanup after a failure.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

A=$G/basic.vma
S0=8388608 # drive-scsi0
S1=540672  # drive-efidisk0

# reference disks from a plain extract
"$VMA" extract "$A" "$T/ref" >/dev/null 2>&1 || fail "reference extract of basic.vma failed"
sha_of() { sed -n "s|^\([0-9a-f]*\)  ./$1\$|\1|p" "$G/basic.sha256"; }
SHA0=$(sha_of disk-drive-scsi0.raw)
SHA1=$(sha_of disk-drive-efidisk0.raw)
sha() { sha256sum <"$1" | cut -d' ' -f1; }

# new_target PATH SIZE [fill-byte-octal]: a target of SIZE bytes, zeros
# (sparse) or filled with a byte.
new_target() {
    rm -f "$1"
    if [ -n "${3:-}" ]; then
        head -c "$2" /dev/zero | tr '\0' "\\${3}" >"$1"
    else
        truncate -s "$2" "$1"
    fi
}

# --- -d: a subset of the disks -------------------------------------------

case_ "extract -d drive-scsi0"
d=$T/sub1
run "$VMA" extract -d drive-scsi0 "$A" "$d"
expect_ok
expect_out "DEVINFO $d/tmp-disk-drive-scsi0.raw $S0
"
check "files of -d drive-scsi0: $(ls "$d" | tr '\n' ' ')" \
    [ "$(ls "$d" | tr '\n' ' ')" = "disk-drive-scsi0.raw qemu-server.conf qemu-server.fw " ]
check "drive-scsi0 digest" [ "$(sha "$d/disk-drive-scsi0.raw")" = "$SHA0" ]

case_ "extract -d drive-efidisk0,drive-scsi0"
d=$T/sub2
run "$VMA" extract -d drive-efidisk0,drive-scsi0 "$A" "$d"
expect_ok
expect_out "DEVINFO $d/tmp-disk-drive-scsi0.raw $S0
DEVINFO $d/tmp-disk-drive-efidisk0.raw $S1
"
dir_sha256 "$d" >"$T/got"
check "digests with -d both" cmp -s "$G/basic.sha256" "$T/got"

case_ "extract -d drive-efidisk0 -v"
d=$T/sub3
run "$VMA" extract -v -d drive-efidisk0 "$A" "$d"
expect_ok
check "-v -d: DEVINFO first" [ "$(head -n1 "$T/out")" = "DEVINFO $d/tmp-disk-drive-efidisk0.raw $S1" ]
check "-v -d: totals last" grep -q '^space reduction due to 4K zero blocks ' "$T/out"
check "files of -d drive-efidisk0" \
    [ "$(ls "$d" | tr '\n' ' ')" = "disk-drive-efidisk0.raw qemu-server.conf qemu-server.fw " ]
check "drive-efidisk0 digest" [ "$(sha "$d/disk-drive-efidisk0.raw")" = "$SHA1" ]

# --- existing target directory ------------------------------------------

case_ "extract into an existing directory"
mkdir "$T/exists"
echo keep >"$T/exists/marker"
run "$VMA" extract "$A" "$T/exists"
expect_failure
check "existing directory untouched" [ "$(ls "$T/exists")" = marker ]
check "marker untouched" [ "$(cat "$T/exists/marker")" = keep ]

case_ "extract into an existing file"
echo keep >"$T/existsf"
run "$VMA" extract "$A" "$T/existsf"
expect_failure
check "existing file untouched" [ "$(cat "$T/existsf")" = keep ]

# --- restore maps ---------------------------------------------------------

# run_map NAME MAPTEXT [extra vma args]: map from a plain file
run_map() {
    local name=$1 text=$2
    shift 2
    printf '%s' "$text" >"$T/$name.map"
    run "$VMA" extract "$@" -r "$T/$name.map" "$A" "$T/$name.dir"
}

case_ "map from a plain file, 0: targets pre-zeroed"
new_target "$T/t0.raw" $S0
new_target "$T/t1.raw" $S1
run_map plain "0:drive-scsi0=$T/t0.raw
0:drive-efidisk0=$T/t1.raw
done
"
expect_ok
expect_out_file "$G/basic.list" # the list lines, no DEVINFO
check "t0 digest" [ "$(sha "$T/t0.raw")" = "$SHA0" ]
check "t1 digest" [ "$(sha "$T/t1.raw")" = "$SHA1" ]
check "only configs in the directory: $(ls "$T/plain.dir" | tr '\n' ' ')" \
    [ "$(ls "$T/plain.dir" | tr '\n' ' ')" = "qemu-server.conf qemu-server.fw " ]
check "t0 size kept" [ "$(stat -c %s "$T/t0.raw")" = $S0 ]

case_ "map from a FIFO"
new_target "$T/f0.raw" $S0
new_target "$T/f1.raw" $S1
mkfifo "$T/map.fifo"
# the map writer blocks until vma opens the FIFO: run it in the background
# and stop it if vma never does
printf '%s\n' "0:drive-scsi0=$T/f0.raw" "1:drive-efidisk0=$T/f1.raw" done >"$T/map.fifo" &
wpid=$!
run "$VMA" extract -r "$T/map.fifo" "$A" "$T/fifo.dir"
kill $wpid 2>/dev/null # gone already when vma read the map
wait $wpid 2>/dev/null
expect_ok
expect_out_file "$G/basic.list"
check "f0 digest" [ "$(sha "$T/f0.raw")" = "$SHA0" ]
check "f1 digest" [ "$(sha "$T/f1.raw")" = "$SHA1" ]

# 1: writes zero blocks, 0: leaves them: targets filled with 0xAA
# (octal 252) first.
case_ "map 1: on a dirty target"
new_target "$T/d0.raw" $S0 252
new_target "$T/d1.raw" $S1 252
run_map dirty1 "1:drive-scsi0=$T/d0.raw
1:drive-efidisk0=$T/d1.raw
"
expect_ok
check "1: d0 digest" [ "$(sha "$T/d0.raw")" = "$SHA0" ]
check "1: d1 digest" [ "$(sha "$T/d1.raw")" = "$SHA1" ]

case_ "map 0: on a dirty target"
new_target "$T/d0.raw" $S0 252
new_target "$T/d1.raw" $S1 252
run_map dirty0 "0:drive-scsi0=$T/d0.raw
0:drive-efidisk0=$T/d1.raw
"
expect_ok
for i in 0 1; do
    ref=$T/ref/disk-drive-scsi0.raw
    [ $i = 1 ] && ref=$T/ref/disk-drive-efidisk0.raw
    # every differing byte is 0 in the reference and 0xAA in the target
    cmp -l "$ref" "$T/d$i.raw" >"$T/cmp" 2>/dev/null
    check "0: d$i: zero blocks must keep 0xAA" [ -s "$T/cmp" ]
    check "0: d$i: only zero bytes of the archive may differ" \
        awk '$2 != 0 || $3 != 252 { bad = 1 } END { exit bad }' "$T/cmp"
done

case_ "map: skip=, unknown devices ignored, no done (EOF)"
new_target "$T/s0.raw" $S0
run_map skip "skip=drive-efidisk0
0:drive-nope=$T/nonexistent.raw
0:drive-scsi0=$T/s0.raw"
expect_ok
check "skip: s0 digest" [ "$(sha "$T/s0.raw")" = "$SHA0" ]
check "skip: nothing made for the unknown device" [ ! -e "$T/nonexistent.raw" ]

case_ "map ends at an empty line"
new_target "$T/e0.raw" $S0
new_target "$T/e1.raw" $S1
run_map empty "0:drive-scsi0=$T/e0.raw
0:drive-efidisk0=$T/e1.raw

this line is not read
"
expect_ok
check "empty line: e0 digest" [ "$(sha "$T/e0.raw")" = "$SHA0" ]

case_ "map options: format=raw, throttling, groups, any order"
new_target "$T/o0.raw" $S0
new_target "$T/o1.img" $S1
run_map opts "throttling.bps=1000000000:throttling.group=g1:format=raw:0:drive-scsi0=$T/o0.raw
format=raw:throttling.group=g1:1:drive-efidisk0=$T/o1.img
"
expect_ok
check "options: o0 digest" [ "$(sha "$T/o0.raw")" = "$SHA0" ]
check "options: o1 digest" [ "$(sha "$T/o1.img")" = "$SHA1" ]

# O_DIRECT needs file system support; probe it first.
if dd if=/dev/zero of="$T/odirect" bs=4096 count=1 oflag=direct 2>/dev/null; then
    MODES="none writethrough directsync writeback unsafe"
else
    echo "skipping cache=none/directsync: no O_DIRECT on $T"
    MODES="writethrough writeback unsafe"
fi
for mode in $MODES; do
    case_ "map cache=$mode"
    new_target "$T/c0.raw" $S0 252
    new_target "$T/c1.raw" $S1
    run_map "cache-$mode" "cache=$mode:1:drive-scsi0=$T/c0.raw
throttling.bps=0:cache=$mode:0:drive-efidisk0=$T/c1.raw
"
    expect_ok
    check "cache=$mode: c0 digest" [ "$(sha "$T/c0.raw")" = "$SHA0" ]
    check "cache=$mode: c1 digest" [ "$(sha "$T/c1.raw")" = "$SHA1" ]
done

case_ "map: target up to 4 MiB larger"
new_target "$T/l0.raw" $((S0 + 4194304))
new_target "$T/l1.raw" $((S1 + 512))
run_map large "0:drive-scsi0=$T/l0.raw
0:drive-efidisk0=$T/l1.raw
"
expect_ok
check "larger target keeps its size" [ "$(stat -c %s "$T/l0.raw")" = $((S0 + 4194304)) ]
check "larger target: data" [ "$(head -c $S0 "$T/l0.raw" | sha256sum | cut -d' ' -f1)" = "$SHA0" ]

# --- map errors: exit 2, one line, the directory removed -----------------

expect_map_failure() {
    expect_failure keep-stdout
    check "stdout holds only the list lines" cmp -s "$G/basic.list" "$T/out"
    check "directory removed after the failure" [ ! -e "$T/$1.dir" ]
}

case_ "map: missing mapping"
new_target "$T/m0.raw" $S0
run_map missing "0:drive-scsi0=$T/m0.raw
done
"
expect_map_failure missing
expect_err "vma: no device name mapping for drive-efidisk0
"

case_ "map: target too small"
new_target "$T/m0.raw" $((S0 - 512))
new_target "$T/m1.raw" $S1
run_map small "0:drive-scsi0=$T/m0.raw
0:drive-efidisk0=$T/m1.raw
"
expect_map_failure small
expect_err_has "$T/m0.raw"
check "too small: target kept" [ "$(stat -c %s "$T/m0.raw")" = $((S0 - 512)) ]

case_ "map: target too large"
new_target "$T/m0.raw" $((S0 + 4194304 + 512))
run_map toolarge "0:drive-scsi0=$T/m0.raw
0:drive-efidisk0=$T/m1.raw
"
expect_map_failure toolarge
expect_err_has "$T/m0.raw"

case_ "map: target missing"
rm -f "$T/m0.raw"
run_map notarget "0:drive-scsi0=$T/m0.raw
0:drive-efidisk0=$T/m1.raw
"
expect_map_failure notarget
expect_err_has "$T/m0.raw"
check "a missing target is not created" [ ! -e "$T/m0.raw" ]

case_ "map: format=qcow2 on a raw file"
new_target "$T/q0.qcow2" $S0
run_map qcow "format=qcow2:0:drive-scsi0=$T/q0.qcow2
0:drive-efidisk0=$T/m1.raw
"
expect_map_failure qcow
# (the whole message, qemu-nbd's included, is checked in nbd.sh; a build
# without NBD says so in the same place)
expect_err_has "vma: cannot open target $T/q0.qcow2 of device 'drive-scsi0': "

case_ "map: no format, not .raw"
new_target "$T/q0.img" $S0
run_map img "0:drive-scsi0=$T/q0.img
0:drive-efidisk0=$T/m1.raw
"
expect_map_failure img
expect_err "vma: $T/q0.img: no format= given and not a .raw file or /dev/ device (say format=raw, or the image's format)
"

# read map failed - <what> ('<line>')
n=0
while IFS= read -r line; do
    n=$((n + 1))
    case_ "map parse error: $line"
    run_map "parse$n" "$line
0:drive-efidisk0=$T/m1.raw
"
    expect_map_failure "parse$n"
    CHECKS=$((CHECKS + 1))
    err=$(cat "$T/err")
    case $err in
    "vma: read map failed - "*" ('$line')") ;;
    *) fail "stderr is not 'vma: read map failed - <what> ('$line')': $err" ;;
    esac
done <<EOF
2:drive-scsi0=$T/m0.raw
drive-scsi0=$T/m0.raw
0:drive-scsi0
0:=$T/m0.raw
0:drive-scsi0=
format=raw:format=raw:0:drive-scsi0=$T/m0.raw
throttling.bps=fast:0:drive-scsi0=$T/m0.raw
cache=sometimes:0:drive-scsi0=$T/m0.raw
format=raw
skip
skip=
EOF

case_ "map file missing"
run "$VMA" extract -r "$T/no-such.map" "$A" "$T/nomap.dir"
expect_failure keep-stdout
check "directory removed" [ ! -e "$T/nomap.dir" ]

# --- vmstate --------------------------------------------------------------

case_ "extract an archive with a vmstate stream"
"$CRAFT" vmstate "$T/vms.vma" "$T/vms.expect" "$T/disk.expect" || fail "vma_craft vmstate"
run "$VMA" list "$T/vms.vma"
expect_ok
expect_out "CFG: size: 38 name: qemu-server.conf
DEV: dev_id=1 size: 197120 devname: drive-scsi0
VMSTATE: dev_id=2 memory: 132072
CTIME: Tue Nov 14 22:13:20 2023
"
run "$VMA" verify "$T/vms.vma"
expect_ok
run "$VMA" extract "$T/vms.vma" "$T/vms.dir"
expect_ok
expect_out "DEVINFO $T/vms.dir/tmp-disk-drive-scsi0.raw 197120
"
check "vmstate.bin holds its zero blocks" cmp -s "$T/vms.expect" "$T/vms.dir/vmstate.bin"
check "disk of the vmstate archive" cmp -s "$T/disk.expect" "$T/vms.dir/disk-drive-scsi0.raw"
check "files of the vmstate archive: $(ls "$T/vms.dir" | tr '\n' ' ')" \
    [ "$(ls "$T/vms.dir" | tr '\n' ' ')" = "disk-drive-scsi0.raw qemu-server.conf vmstate.bin " ]

# --- failures clean up ----------------------------------------------------

case_ "extract of a truncated archive removes what it made"
head -c 2000000 "$A" >"$T/trunc.vma"
run "$VMA" extract "$T/trunc.vma" "$T/trunc.dir"
expect_failure keep-stdout
expect_err_re '^vma: restore failed - .*truncated'
check "directory removed" [ ! -e "$T/trunc.dir" ]

case_ "extract of an archive missing its last extent (stdin)"
head -c 2426880 "$A" >"$T/trunc2.vma"
run_in "$T/trunc2.vma" "$VMA" extract - "$T/trunc2.dir"
expect_failure keep-stdout
expect_err_re '^vma: restore failed - .*missing cluster'
check "directory removed" [ ! -e "$T/trunc2.dir" ]

case_ "extract -r of a truncated archive keeps the targets"
new_target "$T/k0.raw" $S0
new_target "$T/k1.raw" $S1
printf '0:drive-scsi0=%s\n0:drive-efidisk0=%s\n' "$T/k0.raw" "$T/k1.raw" >"$T/k.map"
run "$VMA" extract -r "$T/k.map" "$T/trunc.vma" "$T/k.dir"
expect_failure keep-stdout
check "targets kept" [ -f "$T/k0.raw" -a -f "$T/k1.raw" ]
check "directory removed" [ ! -e "$T/k.dir" ]

done_
