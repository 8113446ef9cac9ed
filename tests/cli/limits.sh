#!/bin/bash
# Limits:
#  - an archive of a 1 TiB sparse device (a few MiB of data at spread
#    offsets) is made with `vma create`, then verifies and extracts with a
#    peak RSS under 64 MiB (/usr/bin/time %M); the extracted disk is a
#    sparse file of exactly 1 TiB with the data at the right offsets;
#  - memory follows what an archive holds, not what it declares:
#    archives declaring 254 (and 4, zstd-compressed) devices of 256 TiB
#    that name one cluster in 32768 are refused with one line by `verify`
#    under the same peak RSS bound (a bitmap per declared device was
#    127 GiB, and 2.1 GB for the 4-device one);
#  - a device past 2^48 bytes (2^32 clusters of 64 KiB) is refused by
#    `create` with a clear message, and one of exactly 2^48 is accepted
#    (its header goes out: the create then fails only because its exec:
#    reader stops). Sources that large need a tmpfs (ext4 ends at 16 TiB),
#    so that part needs root; without it that part is skipped.
#  - `vma checksum` of 256 MiB of clusters stored last to first
#    stays under 64 MiB plus its in-order footprint: clusters waiting for
#    their turn past 64 MiB go to an unlinked file in $TMPDIR.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

TIME=/usr/bin/time
if [ ! -x "$TIME" ]; then
    echo "limits.sh: /usr/bin/time is missing (package 'time', see scripts/deps.sh)" >&2
    exit 99
fi
LIMIT_KIB=65536
TIB=1099511627776
# Sanitizer runtimes reserve shadow memory and quarantine freed blocks:
# the peak-memory bound holds for plain builds only.
ASAN=0
if ldd "$VMA" 2>/dev/null | grep -q 'lib[at]san' || nm "$VMA" 2>/dev/null | grep -q ' __asan_init'; then
    ASAN=1
fi

# peak KIB-FILE CMD...: run CMD as `run` does, its peak RSS (KiB) into the file
peak() {
    local f=$1
    shift
    "$TIME" -f %M -o "$f" "$@" >"$T/out" 2>"$T/err"
    RC=$?
}

# expect_peak_under KIB-FILE WHAT [LIMIT-KIB]
expect_peak_under() {
    local kib limit=${3:-$LIMIT_KIB}
    kib=$(tail -n 1 "$1")
    echo "limits.sh: $2: peak RSS $kib KiB"
    if [ $ASAN = 1 ]; then
        echo "limits.sh: (sanitizer build: the $limit KiB bound is not checked)"
        return
    fi
    check "$2: peak RSS $kib KiB, limit $limit KiB" [ "$kib" -lt "$limit" ]
}

# --- a 1 TiB sparse device ---------------------------------------------

S=$T/src.raw
truncate -s $TIB "$S"
# data: 512 KiB at k * 128 GiB + k * 4.7 GiB (4 KiB aligned), one 300000-
# byte run that ends at the last byte, one unaligned 10000-byte run
: >"$T/chunks"
for k in 0 1 2 3 4 5 6 7; do
    off=$((k * 137438953472 + k * 1234567 * 4096))
    head -c 524288 /dev/zero | openssl enc -aes-128-ctr -nosalt \
        -K "$(printf '%032x' $((k + 1)))" -iv 00000000000000000000000000000000 \
        2>/dev/null | dd of="$S" bs=4096 seek=$((off / 4096)) conv=notrunc status=none
    echo "$off 524288" >>"$T/chunks"
done
head -c 300000 "$G/basic.vma" | dd of="$S" bs=1 seek=$((TIB - 300000)) conv=notrunc status=none
echo "$((TIB - 300000)) 300000" >>"$T/chunks"
printf '%10000s' x | tr ' ' 'y' | dd of="$S" oflag=seek_bytes seek=555555555555 conv=notrunc status=none
echo "555555555555 10000" >>"$T/chunks"
check "the source is 1 TiB" [ "$(stat -c %s "$S")" = $TIB ]

case_ "create of a 1 TiB sparse device"
peak "$T/create.kib" "$VMA" create "$T/big.vma" -c "$G/basic.conf" drive-scsi0="$S"
expect_ok
expect_peak_under "$T/create.kib" "create"

case_ "list of the 1 TiB archive"
run "$VMA" list "$T/big.vma"
expect_ok
check "list shows the size: $(sed -n 2p "$T/out")" \
    grep -qx "DEV: dev_id=1 size: $TIB devname: drive-scsi0" "$T/out"

case_ "verify of the 1 TiB archive"
peak "$T/verify.kib" "$VMA" verify "$T/big.vma"
expect_ok
expect_out_empty
expect_peak_under "$T/verify.kib" "verify"

case_ "verify - of the 1 TiB archive through a pipe"
cat "$T/big.vma" | "$TIME" -f %M -o "$T/verify-pipe.kib" "$VMA" verify - >"$T/out" 2>"$T/err"
RC=$?
expect_ok
expect_peak_under "$T/verify-pipe.kib" "verify -"

case_ "extract of the 1 TiB archive"
peak "$T/extract.kib" "$VMA" extract "$T/big.vma" "$T/x"
expect_ok
expect_peak_under "$T/extract.kib" "extract"
D=$T/x/disk-drive-scsi0.raw
check "extracted disk is 1 TiB: $(stat -c %s "$D" 2>&1)" [ "$(stat -c %s "$D")" = $TIB ]
alloc=$(($(stat -c %b "$D") * $(stat -c %B "$D")))
check "extracted disk is sparse ($alloc bytes allocated)" [ $alloc -lt $((64 * 1048576)) ]
while read -r off len; do
    check "data at $off ($len bytes)" cmp -s -i "$off:$off" -n "$len" "$S" "$D"
done <"$T/chunks"
for off in 1048576 $((TIB / 2)) $((TIB - 300000 - 65536)); do
    check "zeros at $off" cmp -s -i "$off:0" -n 65536 "$D" /dev/zero
done
rm -rf "$T/x" "$T/big.vma" "$S"

# --- declared-huge devices, clusters scattered ----------------------------

case_ "verify of 254 declared devices of 256 TiB, one cluster in 32768"
"$CRAFT" scatter 254 32768 2>/dev/null |
    "$TIME" -f %M -o "$T/scatter254.kib" "$VMA" verify - >"$T/out" 2>"$T/err"
RC=$?
expect_failure
expect_err_has "the cluster maps need"
expect_peak_under "$T/scatter254.kib" "verify of 254 x 256 TiB"

case_ "verify of 4 declared devices of 256 TiB, zstd-compressed"
"$CRAFT" scatter 4 32768 | zstd -q -c >"$T/scatter4.vma.zst"
check "the crafted archive is small ($(stat -c %s "$T/scatter4.vma.zst") bytes)" \
    [ "$(stat -c %s "$T/scatter4.vma.zst")" -lt 2000000 ]
peak "$T/scatter4.kib" "$VMA" verify "$T/scatter4.vma.zst"
expect_failure
expect_err_re "the cluster maps need|missing cluster"
expect_peak_under "$T/scatter4.kib" "verify of 4 x 256 TiB (.zst)"

case_ "list of 254 declared devices of 256 TiB"
"$CRAFT" scatter 254 1 2>/dev/null | head -c 1000000 >"$T/scatter-head.vma"
peak "$T/list254.kib" "$VMA" list "$T/scatter-head.vma"
expect_ok
check "254 DEV lines" [ "$(grep -c '^DEV: dev_id=[0-9]* size: 281474976710656 devname: drive-' "$T/out")" = 254 ]
expect_peak_under "$T/list254.kib" "list of 254 x 256 TiB"
rm -f "$T"/scatter*

# --- checksum of clusters in reverse order -----------------------------

# 4096 clusters (256 MiB, every block stored) written last to first, 0.2 MB
# as .zst: each cluster waits for cluster 0 before it can be hashed. At
# most 64 MiB of them wait in memory, the rest in an unlinked file in
# $TMPDIR: the peak stays under 64 MiB plus what an in-order archive costs
# (about 34 MiB: the queues, the zstd window, OpenSSL), where keeping all
# of them took 290 MB.
case_ "checksum of 256 MiB of clusters in reverse order"
"$CRAFT" reverse 4096 | zstd -q -1 >"$T/rev.vma.zst" || fail "cannot make rev.vma.zst"
want=$("$CRAFT" reverse 4096 image | sha256sum | cut -d' ' -f1)
mkdir -p "$T/spill"
peak "$T/rev.kib" env TMPDIR="$T/spill" "$VMA" checksum "$T/rev.vma.zst"
expect_ok
expect_out "$want  disk-drive-scsi0.raw
"
expect_peak_under "$T/rev.kib" "checksum of reverse order" $((LIMIT_KIB + 49152))
check "nothing left in TMPDIR" [ -z "$(ls -A "$T/spill")" ]

case_ "checksum in reverse order, no place to spill"
run env TMPDIR="$T/missing" "$VMA" checksum "$T/rev.vma.zst"
expect_failure
expect_err_has "vma: checksum failed - cannot make a file in $T/missing for clusters out of order - No such file or directory"

# Under the budget nothing touches TMPDIR.
case_ "checksum of 4 MiB in reverse order without TMPDIR"
"$CRAFT" reverse 64 | zstd -q -1 >"$T/rev64.vma.zst" || fail "cannot make rev64.vma.zst"
run env TMPDIR="$T/missing" "$VMA" checksum "$T/rev64.vma.zst"
expect_ok
expect_out "$("$CRAFT" reverse 64 image | sha256sum | cut -d' ' -f1)  disk-drive-scsi0.raw
"
rm -f "$T"/rev*.vma.zst

# --- salvage reports of declared-huge devices -------------------
# A report walks each device by the runs of its clusters, not cluster by
# cluster: 254 devices of 256 TiB holding one cluster each (a 145 KB
# archive) took 50 s per device for verify --salvage (hours in all, and
# the walk did not heed TERM), so `timeout -k 10 60` fails that: a bound
# on hours, not a timing test.
MAXDEV=281474976710656 # 2^48
"$CRAFT" scatter 254 4294967296 >"$T/huge254.vma"
# report_lines FILE: each device recovered [0, 64 KiB) and lost the rest
report_lines() {
    check "254 recovered ranges of cluster 0" \
        [ "$(grep -c '^  recovered offset 0 length 65536 (clusters 0-0)$' "$1")" = 254 ]
    check "254 lost ranges of the rest" \
        [ "$(grep -c "^  lost      offset 65536 length $((MAXDEV - 65536)) (clusters 1-4294967295)\$" "$1")" = 254 ]
}
case_ "verify --salvage of 254 declared devices of 256 TiB, one cluster each"
run timeout -k 10 60 "$VMA" verify --salvage "$T/huge254.vma"
expect_rc 3
report_lines "$T/out"
cp "$T/out" "$T/huge254.txt"
run timeout -k 10 60 "$VMA" verify --salvage --output-format=json "$T/huge254.vma"
expect_rc 3
check "JSON: 254 devices, 254 lost ranges" \
    [ "$(grep -o "\"offset\": 65536, \"length\": $((MAXDEV - 65536))}" "$T/out" | wc -l)" = 254 ]

# --- device size past 2^48 ----------------------------------------------

if [ "$(id -u)" != 0 ]; then
    echo "limits.sh: SKIP of the 2^48 part: mounting a tmpfs needs root" >&2
elif ! mkdir -p "$T/big" || ! mount -t tmpfs -o size=1m tmpfs "$T/big" 2>"$T/mount.err"; then
    echo "limits.sh: SKIP of the 2^48 part: cannot mount a tmpfs: $(cat "$T/mount.err")" >&2
else
    trap 'umount "$T/big" 2>/dev/null || umount -l "$T/big" 2>/dev/null; rm -rf "$T"' EXIT
    for size in $((MAXDEV + 1)) $((MAXDEV + 512)) $((MAXDEV * 2)); do
        case_ "create of a $size-byte device (past 2^48)"
        rm -f "$T/big/huge.raw"
        truncate -s $size "$T/big/huge.raw"
        run "$VMA" create "$T/huge.vma" drive-scsi0="$T/big/huge.raw"
        expect_failure
        expect_err "vma: device 'drive-scsi0' size $size is out of range (1 to $MAXDEV bytes: 2^32 clusters of 64 KiB)
"
        check "no archive left" [ ! -e "$T/huge.vma" ]
    done

    case_ "create of a device of exactly 2^48 bytes is accepted"
    rm -f "$T/big/huge.raw"
    truncate -s $MAXDEV "$T/big/huge.raw"
    run "$VMA" create "exec:head -c 20000 >'$T/head.vma'" drive-scsi0="$T/big/huge.raw"
    expect_failure
    expect_err_has "exited with status 0 before reading the whole archive"
    check "the header went out" [ "$(head -c 4 "$T/head.vma" | od -An -c | tr -d ' ')" = 'VMA\0' ]
    run_in "$T/head.vma" "$VMA" list -
    expect_ok
    check "list of the 2^48 header" grep -qx "DEV: dev_id=1 size: $MAXDEV devname: drive-scsi0" "$T/out"
    rm -f "$T/big/huge.raw"

    case_ "extract --salvage of 254 declared devices of 256 TiB into sparse files"
    run timeout -k 10 60 "$VMA" extract --salvage "$T/huge254.vma" "$T/big/x"
    expect_rc 3
    check "254 sparse disks of 2^48 bytes" \
        [ "$(find "$T/big/x" -name 'salvaged-disk-drive-*.raw' -size ${MAXDEV}c | wc -l)" = 254 ]
    report_lines "$T/big/x/salvage-report.txt"
    check "the report is verify's" cmp -s "$T/huge254.txt" "$T/big/x/salvage-report.txt"
    rm -rf "$T/big/x"
fi

done_
