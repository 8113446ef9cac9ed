#!/usr/bin/env bash
# The programs in examples/ on the golden archives, their output checked:
# list against the golden listings, hash_devices against the golden
# sha256 sums, restore_progress (its files hashed, and a cancel from its
# second thread that leaves no file), create_threads (an archive from the
# restored images that hashes to the same sums and verifies).
# Usage: examples.sh <vma> <golden-dir> <vma_craft> <shim> <examples-dir>
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
X=$5

# The golden disk sums, as "hash  disk-NAME.raw", sorted.
golden_sums() { grep ' \./disk-' "$G/$1.sha256" | sed 's| \./| |' | sort; }

case_ "list basic.vma.zst"
run "$X/list" "$G/basic.vma.zst"
expect_ok
grep -E '^(config|device) ' "$T/out" >"$T/got"
sed -nE 's/^CFG: size: ([0-9]+) name: (.*)$/config \2 \1/p;
         s/^DEV: dev_id=([0-9]+) size: ([0-9]+) devname: (.*)$/device \1 \3 \2/p' \
    "$G/basic.list" >"$T/want.list"
CHECKS=$((CHECKS + 1))
cmp -s "$T/want.list" "$T/got" || { fail "list differs"; diff "$T/want.list" "$T/got" >&2; }
CHECKS=$((CHECKS + 1))
grep -qx 'compression zstd' "$T/out" || fail "no 'compression zstd' line"

case_ "list of a missing file"
run "$X/list" "$T/missing.vma"
expect_rc 1
expect_err_has "missing.vma"

for a in basic odd-sizes legacy; do
    case_ "hash_devices $a.vma"
    run "$X/hash_devices" "$G/$a.vma"
    expect_ok
    sort "$T/out" >"$T/got"
    golden_sums "$a" >"$T/want"
    CHECKS=$((CHECKS + 1))
    cmp -s "$T/want" "$T/got" || { fail "sums differ"; diff "$T/want" "$T/got" >&2; }
done

case_ "restore_progress basic.vma"
mkdir "$T/r"
run "$X/restore_progress" "$G/basic.vma" "$T/r"
expect_rc 0
expect_err_has "progress 100%"
(cd "$T/r" && sha256sum disk-*.raw | sort) >"$T/got"
golden_sums basic >"$T/want"
CHECKS=$((CHECKS + 1))
cmp -s "$T/want" "$T/got" || { fail "restored images differ"; diff "$T/want" "$T/got" >&2; }

case_ "restore_progress cancelled at 40% by another thread"
mkdir "$T/c"
run "$X/restore_progress" "$G/basic.vma" "$T/c" 40
expect_rc 1
expect_err_has "progress 40%"
expect_err_has "VMA_ERR_CANCELED"
CHECKS=$((CHECKS + 1))
grep -q "progress 50%" "$T/err" && fail "progress went on after the cancel"
CHECKS=$((CHECKS + 1))
[ -z "$(ls -A "$T/c")" ] || fail "the cancelled restore left files: $(ls "$T/c")"

case_ "create_threads from the restored images"
run "$X/create_threads" "$T/new.vma" "drive-scsi0=$T/r/disk-drive-scsi0.raw" \
    "drive-efidisk0=$T/r/disk-drive-efidisk0.raw"
expect_ok
run "$VMA" verify "$T/new.vma"
expect_ok
run "$X/hash_devices" "$T/new.vma"
expect_ok
sort "$T/out" >"$T/got"
CHECKS=$((CHECKS + 1))
cmp -s "$T/want" "$T/got" || { fail "sums of the new archive differ"; diff "$T/want" "$T/got" >&2; }

# A size that is not a multiple of 512: recorded rounded up (Proxmox's
# reader works in sectors), the padding read back as zeros.
case_ "create_threads from a 1000-byte image"
cat "$G/basic.conf" "$G/basic.conf" "$G/basic.conf" | head -c 1000 >"$T/odd.raw"
run "$X/create_threads" "$T/odd.vma" "d=$T/odd.raw"
expect_ok
run "$VMA" verify "$T/odd.vma"
expect_ok
run "$VMA" list "$T/odd.vma"
expect_ok
check "size 1024 recorded" grep -qx "DEV: dev_id=1 size: 1024 devname: d" "$T/out"
run "$VMA" extract "$T/odd.vma" "$T/odd"
expect_ok
{ cat "$T/odd.raw"; head -c 24 /dev/zero; } >"$T/odd.want"
CHECKS=$((CHECKS + 1))
cmp -s "$T/odd.want" "$T/odd/disk-d.raw" || fail "the extracted image differs"

case_ "create_threads refuses an existing output"
run "$X/create_threads" "$T/new.vma" "d=$T/r/disk-drive-scsi0.raw"
expect_rc 1
expect_err_has "already exists"

done_
