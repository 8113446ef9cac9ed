#!/bin/bash
# vma checksum: the SHA-256 of each device as sha256sum prints it for the
# extracted files, for the golden archives (their X.sha256 lists what the
# deployed tool's extract wrote), compressed copies, stdin, a crafted
# archive with a vmstate stream and clusters out of order, an archive
# written with interleaved, shuffled clusters; -d; JSON; errors.
# Usage: checksum.sh <vma> <golden> <vma_craft> <shim> <interleaved>
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
INTERLEAVED=${5:?usage: checksum.sh <vma> <golden> <vma_craft> <shim> <interleaved>}

# The disk lines of a golden X.sha256 ("<hex>  ./disk-...") as checksum
# prints them, in dev_id order (the order of the X.list DEV lines).
golden_disks() {
    local n=$1 name
    sed -n 's/^DEV: dev_id=[0-9]* size: [0-9]* devname: //p' "$G/$n.list" |
        while IFS= read -r name; do
            grep -F "  ./disk-$name.raw" "$G/$n.sha256" | sed 's|  \./|  |'
        done
}

for n in basic legacy zero-disk odd-sizes diskless; do
    golden_disks "$n" >"$T/want-$n"
    case_ "$n: checksum"
    run "$VMA" checksum "$G/$n.vma"
    expect_ok
    expect_out_file "$T/want-$n"
    case_ "$n: checksum from stdin"
    run_in "$G/$n.vma" "$VMA" checksum -
    expect_ok
    expect_out_file "$T/want-$n"
done
check "basic has two disk lines" [ "$(wc -l <"$T/want-basic")" = 2 ]

for ext in zst gz lzo; do
    case_ "basic.vma.$ext: checksum"
    run "$VMA" checksum "$G/basic.vma.$ext"
    expect_ok
    expect_out_file "$T/want-basic"
    case_ "basic.vma.$ext: checksum from a pipe"
    cat "$G/basic.vma.$ext" | "$VMA" checksum - >"$T/out" 2>"$T/err"
    RC=$?
    expect_ok
    expect_out_file "$T/want-basic"
done

case_ "checksum equals sha256sum of what extract writes"
run "$VMA" extract "$G/odd-sizes.vma" "$T/x-odd"
expect_rc 0
(cd "$T/x-odd" && sha256sum disk-drive-sata0.raw disk-drive-ide1.raw) >"$T/want"
run "$VMA" checksum "$G/odd-sizes.vma"
expect_out_file "$T/want"

# -d: only the named devices, in dev_id order; a name twice counts once.
case_ "checksum -d one device"
run "$VMA" checksum -d drive-efidisk0 "$G/basic.vma"
expect_ok
grep -F efidisk0 "$T/want-basic" >"$T/want"
expect_out_file "$T/want"
case_ "checksum -d in another order"
run "$VMA" checksum "$G/basic.vma" -d drive-efidisk0,drive-scsi0,drive-scsi0
expect_ok
expect_out_file "$T/want-basic"

# A disk with clusters out of order between the clusters of a vmstate
# stream that is cut to its recorded size (vma_craft writes the files
# extract must produce).
case_ "vmstate and out-of-order clusters"
check "vma_craft vmstate" "$CRAFT" vmstate "$T/vms.vma" "$T/vms.bin" "$T/vms-disk.raw"
printf '%s  disk-drive-scsi0.raw\n%s  vmstate.bin\n' \
    "$(sha256sum <"$T/vms-disk.raw" | cut -d' ' -f1)" \
    "$(sha256sum <"$T/vms.bin" | cut -d' ' -f1)" >"$T/want"
run "$VMA" checksum "$T/vms.vma"
expect_ok
expect_out_file "$T/want"
case_ "checksum -d vmstate"
run "$VMA" checksum -d vmstate "$T/vms.vma"
expect_ok
grep vmstate.bin "$T/want" >"$T/want1"
expect_out_file "$T/want1"

# Two disks whose clusters were written shuffled and interleaved (the
# first cluster of drive-a last): every cluster waits for its turn.
case_ "interleaved, shuffled clusters"
check "interleaved writer" "$INTERLEAVED" "$T/il.vma" "$T/a.raw" "$T/b.raw"
printf '%s  disk-drive-a.raw\n%s  disk-drive-b.raw\n' \
    "$(sha256sum <"$T/a.raw" | cut -d' ' -f1)" "$(sha256sum <"$T/b.raw" | cut -d' ' -f1)" >"$T/want"
run "$VMA" checksum "$T/il.vma"
expect_ok
expect_out_file "$T/want"
run "$VMA" extract "$T/il.vma" "$T/x-il"
(cd "$T/x-il" && sha256sum disk-drive-a.raw disk-drive-b.raw) >"$T/got"
check "extract agrees with checksum" cmp -s "$T/want" "$T/got"

# Names that sha256sum escapes: a backslash (its line starts with '\').
case_ "name with a backslash"
check "rename" "$CRAFT" rename-device "$G/zero-disk.vma" "$T/bs.vma" 1 'a\b'
run "$VMA" checksum "$T/bs.vma"
expect_ok
expect_out "\\bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8  disk-a\\\\b.raw
"

case_ "checksum --output-format=json"
run "$VMA" checksum --output-format=json "$G/basic.vma"
expect_ok
check "json: sha256 of drive-scsi0" [ "$(jq -r '.devices[] | select(.name == "drive-scsi0") | .sha256' "$T/out")" = \
    "$(grep -F drive-scsi0 "$T/want-basic" | cut -d' ' -f1)" ]
check "json: file names" [ "$(jq -r '[.devices[].file] | join(",")' "$T/out")" = \
    "disk-drive-scsi0.raw,disk-drive-efidisk0.raw" ]

# Errors: one line, exit 2, nothing on stdout.
case_ "checksum -d unknown device"
run "$VMA" checksum -d drive-scsi0,nosuch "$G/basic.vma"
expect_failure
expect_err "vma: no device 'nosuch' in the archive
"
case_ "checksum of a missing file"
run "$VMA" checksum "$T/missing.vma"
expect_failure
case_ "checksum of a truncated archive"
head -c 1000000 "$G/basic.vma" >"$T/trunc.vma"
run "$VMA" checksum "$T/trunc.vma"
expect_failure
expect_err_has "checksum failed - "
case_ "checksum of a corrupt archive"
# (the data of an extent has no checksum in the format: break the magic
# of the second extent header)
cp "$G/basic.vma" "$T/bad.vma"
off=$(grep -obUa VMAE "$G/basic.vma" | sed -n 2p | cut -d: -f1)
printf 'X' | dd of="$T/bad.vma" bs=1 seek="$off" conv=notrunc status=none
run "$VMA" checksum "$T/bad.vma"
expect_failure
case_ "checksum of a truncated zstd stream"
head -c 800000 "$G/basic.vma.zst" >"$T/trunc.vma.zst"
run "$VMA" checksum "$T/trunc.vma.zst"
expect_failure
case_ "checksum: usage"
run "$VMA" checksum
expect_usage
run "$VMA" checksum "$G/basic.vma" "$G/basic.vma"
expect_usage
run "$VMA" checksum -v "$G/basic.vma"
expect_usage

done_
