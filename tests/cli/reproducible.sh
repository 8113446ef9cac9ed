#!/bin/bash
# Reproducible archives: create --uuid and --ctime (or SOURCE_DATE_EPOCH)
# give the same bytes for the same sources, plain and compressed (zstd on
# all cores, gzip, lzo); without them two archives differ (random uuid).
# Bad values fail before anything is written.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

differ() { ! cmp -s "$1" "$2"; }
UUID=01234567-89ab-cdef-0123-456789abcdef
"$VMA" extract "$G/basic.vma" "$T/src" >/dev/null 2>&1 || { echo "extract failed" >&2; exit 99; }
cp "$G/basic.conf" "$T/qemu-server.conf"
S1=$T/src/disk-drive-scsi0.raw S2=$T/src/disk-drive-efidisk0.raw

# create_twice NAME ARGS...: two creates with the same arguments, into
# $T/NAME-1.vma and $T/NAME-2.vma (a second apart at least once, so a
# time that leaked in would show).
create_twice() {
    local name=$1
    shift
    run "$VMA" create "$T/$name-1.vma" "$@"
    expect_ok
    [ "$name" = plain ] && sleep 1.1
    run "$VMA" create "$T/$name-2.vma" "$@"
    expect_ok
}

for c in none zstd zstd:5 gzip gzip:1 lzo; do
    name=${c/:/-}
    [ "$c" = none ] && name=plain
    case_ "--compress=$c --uuid --ctime: same bytes"
    create_twice "$name" --compress="$c" --uuid="$UUID" --ctime=1700000000 \
        -c "$T/qemu-server.conf" "drive-scsi0=$S1" "drive-efidisk0=$S2"
    check "$c: cmp" cmp -s "$T/$name-1.vma" "$T/$name-2.vma"
done

case_ "the uuid and ctime are in the header"
run "$VMA" list --output-format=json "$T/plain-1.vma"
expect_ok
check "uuid" [ "$(jq -r .uuid "$T/out")" = "$UUID" ]
check "ctime" [ "$(jq -r .ctime "$T/out")" = 2023-11-14T22:13:20Z ]
case_ "the archive verifies and holds the sources"
run "$VMA" checksum "$T/zstd-1.vma"
expect_ok
(cd "$T/src" && sha256sum disk-drive-scsi0.raw disk-drive-efidisk0.raw) >"$T/want"
expect_out_file "$T/want"

case_ "SOURCE_DATE_EPOCH sets ctime"
SOURCE_DATE_EPOCH=1600000000 run "$VMA" create "$T/sde-1.vma" --uuid="$UUID" "drive-scsi0=$S1"
expect_ok
sleep 1.1
SOURCE_DATE_EPOCH=1600000000 run "$VMA" create "$T/sde-2.vma" --uuid="$UUID" "drive-scsi0=$S1"
expect_ok
check "SOURCE_DATE_EPOCH: cmp" cmp -s "$T/sde-1.vma" "$T/sde-2.vma"
run "$VMA" list --output-format=json "$T/sde-1.vma"
check "ctime from SOURCE_DATE_EPOCH" [ "$(jq -r .ctime_epoch "$T/out")" = 1600000000 ]
case_ "--ctime wins over SOURCE_DATE_EPOCH"
SOURCE_DATE_EPOCH=1600000000 run "$VMA" create "$T/sde-3.vma" --ctime=5 "drive-scsi0=$S1"
expect_ok
run "$VMA" list --output-format=json "$T/sde-3.vma"
check "ctime 5" [ "$(jq -r .ctime_epoch "$T/out")" = 5 ]
case_ "ctime before 1970"
run "$VMA" create "$T/neg.vma" --ctime=-86400 "drive-scsi0=$S1"
expect_ok
run "$VMA" list --output-format=json "$T/neg.vma"
check "ctime 1969" [ "$(jq -r .ctime "$T/out")" = 1969-12-31T00:00:00Z ]

case_ "without --uuid: archives differ"
run "$VMA" create "$T/r1.vma" --ctime=1 "drive-scsi0=$S1"
run "$VMA" create "$T/r2.vma" --ctime=1 "drive-scsi0=$S1"
check "random uuids differ" differ "$T/r1.vma" "$T/r2.vma"

# Bad values: one line, exit 2, no archive.
while IFS='|' read -r what args msg; do
    case_ "bad: $what"
    # shellcheck disable=SC2086
    run "$VMA" create "$T/bad.vma" $args "drive-scsi0=$S1"
    expect_failure
    expect_err_has "$msg"
    check "no archive" [ ! -e "$T/bad.vma" ]
done <<EOF
short uuid|--uuid=0123|invalid uuid '0123'
uuid with junk|--uuid=${UUID}x|invalid uuid
empty uuid|--uuid=|invalid uuid ''
ctime not a number|--ctime=yesterday|invalid ctime 'yesterday'
ctime with junk|--ctime=12x|invalid ctime '12x'
empty ctime|--ctime=|invalid ctime ''
ctime too large|--ctime=99999999999999999999|invalid ctime
EOF
case_ "bad: SOURCE_DATE_EPOCH"
SOURCE_DATE_EPOCH=soon run "$VMA" create "$T/bad.vma" "drive-scsi0=$S1"
expect_failure
expect_err "vma: invalid SOURCE_DATE_EPOCH 'soon' (expected seconds since 1970)
"
check "no archive" [ ! -e "$T/bad.vma" ]

done_
