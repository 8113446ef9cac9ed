#!/bin/bash
# --output-format=json for list, verify, checksum and extract, parsed
# with jq: the header fields against the golden X.list, verify's and
# extract's per-device statistics and verdict, and one JSON error object on stdout (with the
# exit status) on every failure path. json_writer checks the escaping.
# Usage: json.sh <vma> <golden> <vma_craft> <shim> <json_writer>
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
JW=${5:?usage: json.sh <vma> <golden> <vma_craft> <shim> <json_writer>}
command -v jq >/dev/null || { echo "jq is missing: scripts/deps.sh" >&2; exit 99; }

# jq_is FILTER WANT: the filter over stdout gives WANT (jq -r, one line).
jq_is() {
    CHECKS=$((CHECKS + 1))
    local got
    got=$(jq -r "$1" "$T/out" 2>&1)
    [ "$got" = "$2" ] || fail "jq '$1': got '$got', expected '$2'"
}

# One JSON document on stdout (jq parses it, nothing else follows).
expect_json() {
    CHECKS=$((CHECKS + 1))
    [ "$(jq -s length "$T/out" 2>/dev/null)" = 1 ] ||
        { fail "stdout is not one JSON document"; show "$T/out" >&2; }
}

# A failure in JSON mode: exit status, the error object on stdout, and
# still the one "vma: " line on stderr.
expect_json_error() {
    local rc=$1
    expect_rc "$rc"
    expect_json
    jq_is '.exit' "$rc"
    jq_is '.error | type' string
    jq_is 'keys | join(",")' error,exit
}

for n in basic legacy zero-disk odd-sizes diskless; do
    a=$G/$n.vma
    case_ "$n: list --output-format=json"
    run "$VMA" list --output-format=json "$a"
    expect_ok
    expect_json
    # The DEV and CFG lines again, from the JSON.
    jq -r '(.configs[] | "CFG: size: \(.size) name: \(.name)"),
           (.devices[] | "DEV: dev_id=\(.id) size: \(.size) devname: \(.name)")' \
        "$T/out" >"$T/lines"
    grep -v '^CTIME' "$G/$n.list" >"$T/want"
    check "$n: configs and devices as in $n.list" cmp -s "$T/want" "$T/lines"
    epoch=$(jq -r .ctime_epoch "$T/out")
    jq_is .ctime "$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
    check "$n: ctime_epoch is the list's CTIME" [ "CTIME: $(date -u -d "@$epoch" '+%a %b %e %H:%M:%S %Y')" = "$(grep ^CTIME "$G/$n.list")" ]
    jq_is '.uuid | test("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")' true
    jq_is '[.devices[].vmstate] | all(. == false)' true
    jq_is .compression none

    case_ "$n: verify --output-format=json"
    run "$VMA" verify --output-format=json "$a"
    expect_ok
    expect_json
    jq_is .verdict ok
    # every byte of a disk is either stored or a zero block
    jq_is '[.devices[] | .bytes_stored + .zero_bytes == .size] | all' true
    jq_is '[.devices[] | .sparse_ratio >= 0 and .sparse_ratio <= 1] | all' true
    cp "$T/out" "$T/verify.json"

    case_ "$n: extract --output-format=json"
    rm -rf "$T/x"
    run "$VMA" extract --output-format=json "$a" "$T/x"
    expect_ok
    expect_json
    jq_is .verdict ok
    jq_is .directory "$T/x"
    # the header and the statistics are verify's; each file is there
    check "$n: extract's header and statistics are verify's" cmp -s \
        <(jq -S 'del(.directory) | .devices |= map(del(.file))' "$T/out") <(jq -S . "$T/verify.json")
    for f in $(jq -r '.devices[].file' "$T/out"); do
        check "$n: $f was written" [ -f "$T/x/$f" ]
    done
    jq_is '[.devices[] | .file == "disk-\(.name).raw"] | all' true
    check "$n: no DEVINFO line in JSON mode" [ "$(grep -c DEVINFO "$T/out")" = 0 ]
done

case_ "extract json -d: the device left out has file null"
rm -rf "$T/x"
run "$VMA" extract --output-format=json -v -d drive-efidisk0 "$G/basic.vma" "$T/x"
expect_ok
expect_json
jq_is '[.devices[] | "\(.name)=\(.file)"] | join(",")' "drive-scsi0=null,drive-efidisk0=disk-drive-efidisk0.raw"
check "-d: the left-out disk was not written" [ ! -e "$T/x/disk-drive-scsi0.raw" ]
case_ "extract json -r: refused as a usage error, nothing made"
rm -rf "$T/x"
run "$VMA" extract --output-format=json -r "$T/map" "$G/basic.vma" "$T/x"
expect_json_error 1
jq_is '.error | contains("-r")' true
check "-r + json: no directory made" [ ! -e "$T/x" ]
case_ "extract json: a truncated archive, the error object and no files left"
head -c 1000000 "$G/basic.vma" >"$T/trunc.vma"
rm -rf "$T/x"
run "$VMA" extract --output-format=json "$T/trunc.vma" "$T/x"
expect_json_error 2
jq_is '.error | startswith("restore failed - ")' true
check "truncated: the directory was removed" [ ! -e "$T/x" ]
case_ "extract --output-format=text prints the DEVINFO lines as before"
rm -rf "$T/x"
run "$VMA" extract --output-format=text "$G/basic.vma" "$T/x"
expect_ok
check "text: DEVINFO lines" grep -qx "DEVINFO $T/x/tmp-disk-drive-scsi0.raw 8388608" "$T/out"

case_ "zero-disk: everything sparse"
run "$VMA" verify --output-format=json "$G/zero-disk.vma"
jq_is '.devices[0].sparse_ratio' 1
jq_is '.devices[0].bytes_stored' 0
jq_is '.zero_cluster_bytes' 4194304

case_ "basic.vma.zst: verify json from stdin"
run_in "$G/basic.vma.zst" "$VMA" verify --output-format=json -
expect_ok
jq_is .compression zstd
jq_is '.devices | length' 2

case_ "verify -v in JSON mode: stdout is the document only"
run "$VMA" verify -v --output-format=json "$G/basic.vma"
expect_ok
expect_json

case_ "vmstate flag"
check "vma_craft vmstate" "$CRAFT" vmstate "$T/vms.vma" "$T/vms.bin" "$T/vms-disk.raw"
run "$VMA" list --output-format=json "$T/vms.vma"
expect_ok
jq_is '[.devices[] | "\(.name)=\(.vmstate)"] | join(",")' "drive-scsi0=false,vmstate=true"
jq_is .ctime 2023-11-14T22:13:20Z
jq_is .ctime_epoch 1700000000
rm -rf "$T/x"
run "$VMA" extract --output-format=json "$T/vms.vma" "$T/x"
expect_ok
jq_is '[.devices[] | "\(.name)=\(.file)"] | join(",")' "drive-scsi0=disk-drive-scsi0.raw,vmstate=vmstate.bin"
check "vmstate.bin was written" [ -f "$T/x/vmstate.bin" ]

case_ "--output-format=text is the default"
run "$VMA" list --output-format=text "$G/basic.vma"
expect_ok
expect_out_file "$G/basic.list"
case_ "--output-format json (separate argument), last one wins"
run "$VMA" list --output-format text --output-format json "$G/basic.vma"
expect_ok
expect_json

# Failures: the error object on stdout, the line on stderr.
case_ "json: missing file"
run "$VMA" list --output-format=json "$T/missing.vma"
expect_json_error 2
expect_err_has "vma: "
jq_is .error "cannot open $T/missing.vma: No such file or directory"
case_ "json: not an archive"
printf 'hello, not a vma\n' >"$T/garbage.vma"
run "$VMA" verify --output-format=json "$T/garbage.vma"
expect_json_error 2
case_ "json: truncated archive (verify)"
head -c 1000000 "$G/basic.vma" >"$T/trunc.vma"
run "$VMA" verify --output-format=json "$T/trunc.vma"
expect_json_error 2
jq_is '.error | startswith("verify failed - ")' true
case_ "json: truncated header (list)"
head -c 5000 "$G/basic.vma" >"$T/trunc-hdr.vma"
run "$VMA" list --output-format=json "$T/trunc-hdr.vma"
expect_json_error 2
case_ "json: checksum of a truncated zstd archive"
head -c 700000 "$G/basic.vma.zst" >"$T/trunc.vma.zst"
run "$VMA" checksum --output-format=json "$T/trunc.vma.zst"
expect_json_error 2
case_ "json: checksum -d unknown"
run "$VMA" checksum --output-format=json -d nosuch "$G/basic.vma"
expect_json_error 2
jq_is .error "no device 'nosuch' in the archive"
case_ "json: usage error after the option"
run "$VMA" list --output-format=json
expect_json_error 1
case_ "json: an unknown --output-format is a usage error"
run "$VMA" list --output-format=xml "$G/basic.vma"
expect_usage
case_ "json: not for config, create"
run "$VMA" config --output-format=json "$G/basic.vma"
expect_usage

# The writer's escaping: control characters as \u00XX, '"' and '\', DEL,
# valid UTF-8 kept, each invalid byte replaced by U+FFFD (overlong forms,
# surrogates, stray continuation bytes, a cut sequence).
case_ "json_writer escaping"
run "$JW" "$(printf 'a\001b\tc"d\\e\177\037')" "$(printf 'caf\303\251 \360\237\230\200')" \
    "$(printf 'x\377y\300\257z\355\240\200w\342\202')" ""
expect_rc 0
expect_json
jq_is '.strings[0] == "a\u0001b\tc\"d\\e\u007f\u001f"' true
jq_is '.strings[1]' "$(printf 'caf\303\251 \360\237\230\200')"
jq_is '.strings[2] == "x\ufffdy\ufffd\ufffdz\ufffd\ufffd\ufffdw\ufffd\ufffd"' true
jq_is '.strings[3]' ""
check "control characters as \\u00XX" grep -qF 'a\u0001b\u0009c\"d\\e\u007f\u001f' "$T/out"
check "no raw control byte in the output" [ "$(tr -d '\n' <"$T/out" | tr -d '[:print:]' | LC_ALL=C tr -d '\200-\377' | wc -c)" = 0 ]
check "uint64 exact" grep -qF '18446744073709551615' "$T/out"
jq_is '.empty | length' 0
jq_is '.nested | length' 2

done_
