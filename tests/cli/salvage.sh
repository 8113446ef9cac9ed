#!/bin/bash
# vma extract --salvage and vma verify --salvage: damaged copies of the
# golden archive (cut at and inside every extent, flipped bits in extent
# headers, blockinfos and data, garbage between extents, a damaged header,
# broken compressed streams). The clusters expected lost are read here from
# the archive's own extent table (od), not from vma; the salvaged disks
# must equal the reference disks with exactly those clusters as holes.
# Over every run: no output named disk-*.raw, and exit 3 whenever the
# report lists a loss.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

command -v jq >/dev/null || { echo "jq missing (scripts/deps.sh installs it)"; exit 99; }

A=$G/basic.vma
"$VMA" extract "$A" "$T/ref" >/dev/null 2>&1 || fail "reference extract of basic.vma failed"
NAME[1]=drive-scsi0
NAME[2]=drive-efidisk0
SIZE[1]=8388608
SIZE[2]=540672

be() { od -An -tu1 -j"$2" -N"$3" "$1" | awk '{v=0; for (i=1;i<=NF;i++) v=v*256+$i; print v}'; }
HSIZE=$(be "$A" 56 4)

# Extent table of the plain archive: "offset length" per extent.
extents() {
    local off=$HSIZE size bc
    size=$(stat -c %s "$A")
    while [ $((off + 512)) -le "$size" ]; do
        bc=$(be "$A" $((off + 6)) 2)
        echo "$off $((512 + bc * 4096))"
        off=$((off + 512 + bc * 4096))
    done
}
mapfile -t EXT < <(extents)
NEXT=${#EXT[@]}
check "basic.vma has several extents" [ "$NEXT" -ge 3 ]
ext_off() { echo "${EXT[$1]%% *}"; }
ext_len() { echo "${EXT[$1]##* }"; }

# "dev cluster" of every cluster named in extent k (blockinfo: mask 2,
# reserved 1, dev_id 1, cluster 4 bytes, big-endian).
ext_clusters() {
    od -An -tu1 -v -j$(($(ext_off "$1") + 40)) -N472 "$A" | tr -s ' \n' '\n' | grep -v '^$' |
        awk '{b[NR%8]=$1} NR%8==0 {if (b[4]) print b[4], b[5]*16777216+b[6]*65536+b[7]*256+b[0]}'
}
# Expected lost clusters for a list of extent indexes.
lost_of() { for k in "$@"; do ext_clusters "$k"; done | sort -n -k1,1 -k2,2 | uniq; }

# The report's lost ranges as "dev cluster" lines.
report_lost() {
    jq -r '.devices[] | .id as $id | .lost[] | "\($id) \(.offset) \(.length)"' "$1" |
        awk '{for (c = int($2 / 65536); c * 65536 < $2 + $3; c++) print $1, c}' |
        sort -n -k1,1 -k2,2
}

# A reference disk with the given lost clusters ("dev cluster" on stdin)
# zeroed: what a salvaged disk must be.
expected_disk() { # dev out
    local d c
    cp "$T/ref/disk-${NAME[$1]}.raw" "$2"
    while read -r d c; do
        [ "$d" = "$1" ] && dd if=/dev/zero of="$2" bs=65536 seek="$c" count=1 conv=notrunc status=none
    done
    truncate -s "${SIZE[$1]}" "$2"
}

# Invariants of every salvage output directory.
invariants() { # dir rc
    local lost recovered
    CHECKS=$((CHECKS + 1))
    if compgen -G "$1/disk-*.raw" >/dev/null || compgen -G "$1/tmp-disk-*" >/dev/null; then
        fail "a salvaged output looks like a complete restore"
    fi
    [ -f "$1/salvage-report.json" ] || { fail "no JSON report"; return; }
    check "text report" [ -s "$1/salvage-report.txt" ]
    check "JSON report parses" jq -e . "$1/salvage-report.json" >/dev/null
    lost=$(jq '[.devices[].bytes_lost] | add' "$1/salvage-report.json")
    recovered=$(jq '[.devices[].bytes_recovered] | add' "$1/salvage-report.json")
    if [ "$lost" -gt 0 ] && [ "$recovered" -gt 0 ]; then
        check "exit 3 when the report lists a loss ($1)" [ "$2" = 3 ]
    fi
    [ "$lost" -gt 0 ] && [ "$recovered" = 0 ] && check "exit 2 when nothing was recovered" [ "$2" = 2 ]
    [ "$2" = 0 ] && check "exit 0 only without a loss" [ "$lost" = 0 ]
    check "the JSON names the exit status" [ "$(jq .exit "$1/salvage-report.json")" = "$2" ]
    for d in 1 2; do
        check "salvaged disk of device $d has the full size" \
            [ "$(stat -c %s "$1/salvaged-disk-${NAME[$d]}.raw")" = "${SIZE[$d]}" ]
    done
}

# salvage_case NAME ARCHIVE RC EXTENT...: extract --salvage; the report
# must list exactly the clusters of the given extents as lost and the
# disks must equal the reference with those clusters as holes.
salvage_case() {
    local name=$1 arch=$2 want_rc=$3 out=$T/s-$1
    shift 3
    case_ "$name"
    run "$VMA" extract --salvage "$arch" "$out"
    expect_rc "$want_rc"
    invariants "$out" "$RC"
    lost_of "$@" >"$T/want-lost"
    report_lost "$out/salvage-report.json" >"$T/got-lost"
    CHECKS=$((CHECKS + 1))
    cmp -s "$T/want-lost" "$T/got-lost" || {
        fail "lost clusters differ from the damaged extents ($*)"
        diff "$T/want-lost" "$T/got-lost" | head -5 >&2
    }
    for d in 1 2; do
        expected_disk "$d" "$T/want-disk" <"$T/want-lost"
        check "device $d: recovered bytes equal the original, lost ones are holes" \
            cmp -s "$T/want-disk" "$out/salvaged-disk-${NAME[$d]}.raw"
    done
    check "configs as usual" cmp -s "$T/ref/qemu-server.conf" "$out/qemu-server.conf"
    # verify --salvage prints the same report (for one case of each kind:
    # the suite also runs under valgrind)
    [ "${VERIFY_TOO:-}" = 1 ] || return 0
    run "$VMA" verify --salvage "$arch"
    expect_rc "$want_rc"
    check "verify --salvage prints the text report" cmp -s "$T/out" "$out/salvage-report.txt"
    run "$VMA" verify --salvage --output-format=json "$arch"
    expect_rc "$want_rc"
    check "verify --salvage JSON is the JSON report" cmp -s "$T/out" "$out/salvage-report.json"
}

all_from() { seq "$1" $((NEXT - 1)); }

# --- intact ---------------------------------------------------------------
VERIFY_TOO=1 salvage_case intact "$A" 0
expect_err_empty
check "intact: verdict complete" [ "$(jq -r .verdict "$T/s-intact/salvage-report.json")" = complete ]

# --- truncated at and inside every extent ------------------------------------
for k in $(seq 0 $((NEXT - 1))); do
    off=$(ext_off "$k")
    rc=3
    [ "$k" = 0 ] && rc=2
    for cut in "$off" $((off + 100)) $((off + 512 + 5000)) $((off + $(ext_len "$k") - 1)); do
        head -c "$cut" "$A" >"$T/cut.vma"
        # shellcheck disable=SC2046
        VERIFY_TOO=$([ "$cut" = $((off + 512 + 5000)) ] && echo 1) \
            salvage_case "cut-$k-$cut" "$T/cut.vma" "$rc" $(all_from "$k")
        [ "$k" = 0 ] && expect_err_has "nothing could be recovered"
    done
done

# --- bit flips in an extent header and in a blockinfo ----------------------
for k in $(seq 0 $((NEXT - 1))); do
    for at in 0 30 $((40 + 8 * 2 + 3)) $((40 + 8 * 2 + 7)); do
        cp "$A" "$T/flip.vma"
        printf '\x5a' | dd of="$T/flip.vma" bs=1 seek=$(($(ext_off "$k") + at)) conv=notrunc status=none
        VERIFY_TOO=$([ "$at" = 30 ] && echo 1) salvage_case "flip-$k-$at" "$T/flip.vma" 3 "$k"
        expect_err_has "partial: some data lost"
        check "report says why" grep -q "bad-extent at archive offset $(ext_off "$k")" \
            "$T/s-flip-$k-$at/salvage-report.txt"
    done
done

# --- a flip in data: no checksum, restored as it is ------------------------
cp "$A" "$T/dflip.vma"
printf '\x5a' | dd of="$T/dflip.vma" bs=1 seek=$(($(ext_off 1) + 512 + 3 * 4096 + 9)) conv=notrunc status=none
case_ data-flip
run "$VMA" extract --salvage "$T/dflip.vma" "$T/s-dflip"
expect_rc 0
invariants "$T/s-dflip" "$RC"
n=$(cat "$T/s-dflip/salvaged-disk-drive-scsi0.raw" "$T/s-dflip/salvaged-disk-drive-efidisk0.raw" | cmp -l - <(cat "$T/ref/disk-drive-scsi0.raw" "$T/ref/disk-drive-efidisk0.raw") | wc -l)
check "data flip: exactly one byte differs" [ "$n" = 1 ]

# --- garbage between two extents (with an extent magic in it) --------------
o2=$(ext_off 2)
{ head -c "$o2" "$A"; head -c 30000 /dev/urandom; printf 'VMAE'; head -c 9000 /dev/urandom
  tail -c +$((o2 + 1)) "$A"; } >"$T/garbage.vma"
VERIFY_TOO=1 salvage_case garbage "$T/garbage.vma" 0
check "garbage reported" grep -q "bad-extent at archive offset $o2, 39004 bytes" \
    "$T/s-garbage/salvage-report.txt"

# --- a magic planted in data, with the real extent header damaged ----------
cp "$A" "$T/planted.vma"
o1=$(ext_off 1)
dd if="$A" of="$T/planted.vma" bs=1 skip=$(ext_off 0) seek=$((o1 + 512 + 8192)) count=512 conv=notrunc status=none
printf 'VMAE' | dd of="$T/planted.vma" bs=1 seek=$((o1 + 512 + 20000)) conv=notrunc status=none
printf '\x00' | dd of="$T/planted.vma" bs=1 seek=$((o1 + 30)) conv=notrunc status=none
# The copy of extent 0's header is MD5-valid, but its clusters were read.
salvage_case planted "$T/planted.vma" 3 1

# --- a damaged archive header -------------------------------------------
at=$(grep -obaF 'memory: 2048' "$A" | head -1 | cut -d: -f1)
check "found a config byte in the header" [ -n "$at" ] && [ "$at" -lt "$HSIZE" ]
cp "$A" "$T/hdr.vma"
printf 'B' | dd of="$T/hdr.vma" bs=1 seek="$at" conv=notrunc status=none
case_ header-md5
run "$VMA" extract --salvage "$T/hdr.vma" "$T/s-hdr"
expect_failure
expect_err_has "--force-header"
check "nothing written without --force-header" [ ! -e "$T/s-hdr" ]
run "$VMA" extract --salvage --force-header "$T/hdr.vma" "$T/s-hdr"
expect_rc 3
invariants "$T/s-hdr" "$RC"
check "forced header reported" grep -q "header-md5" "$T/s-hdr/salvage-report.txt"
check "forced: disks all there" cmp -s "$T/ref/disk-drive-scsi0.raw" "$T/s-hdr/salvaged-disk-drive-scsi0.raw"
run "$VMA" verify "$T/hdr.vma"
expect_failure
# a header whose structure is broken is never forced
cp "$A" "$T/hdr2.vma"
printf '\x7f' | dd of="$T/hdr2.vma" bs=1 seek=$((4096 + 32)) conv=notrunc status=none
run "$VMA" extract --salvage --force-header "$T/hdr2.vma" "$T/s-hdr2"
expect_failure
check "nothing written for a broken header" [ ! -e "$T/s-hdr2" ]

# --- compressed streams cut short or broken ------------------------------
for c in zst gz lzo; do
    for how in cut zero; do
        f=$T/b.vma.$c
        cp "$G/basic.vma.$c" "$f"
        len=$(stat -c %s "$f")
        if [ $how = cut ]; then
            truncate -s $((len / 2)) "$f"
        else
            dd if=/dev/zero of="$f" bs=1 seek=$((len / 2)) count=64 conv=notrunc status=none
        fi
        case_ "$c-$how"
        out=$T/s-$c-$how
        run "$VMA" extract --salvage "$f" "$out"
        check "$c $how: exit 3" [ "$RC" = 3 ]
        invariants "$out" "$RC"
        check "$c $how: the stream error is reported" \
            jq -e '[.events[].event] | index("stream-error")' "$out/salvage-report.json" >/dev/null
        # the lost clusters are those of a run of extents k..m: to the end
        # for a cut, one lzop block's extents. (Zeros in a zstd frame or
        # gzip member show only at its checksum, after its bytes came out:
        # checked against zstd -dc and gzip -dc below.)
        [ $how = zero ] && [ $c != lzo ] && continue
        report_lost "$out/salvage-report.json" >"$T/got-lost"
        found=
        for k in $(seq 0 $((NEXT - 1))); do
            for m in $(seq "$k" $((NEXT - 1))); do
                # shellcheck disable=SC2046
                lost_of $(seq "$k" "$m") >"$T/want-lost"
                cmp -s "$T/want-lost" "$T/got-lost" && found=$k-$m && break 2
            done
        done
        check "$c $how: the clusters lost are those of a run of extents" [ -n "$found" ]
        if [ $how = cut ]; then
            check "$c $how: lost from the damage to the end" [ "${found#*-}" = $((NEXT - 1)) ]
        else
            check "$c $how: the extents after the bad lzop block are kept" \
                [ "${found#*-}" -lt $((NEXT - 1)) ]
        fi
        if [ $c = lzo ] || [ $how = cut ]; then
            for d in 1 2; do
                expected_disk "$d" "$T/want-disk" <"$T/got-lost"
                check "$c $how: device $d equals the original where recovered" \
                    cmp -s "$T/want-disk" "$out/salvaged-disk-${NAME[$d]}.raw"
            done
        fi
    done
done

# --- a broken compressed stream gives what its own tool decodes -----------
# Each codec's damaged file against its tool's output (zstd -dc, gzip -dc,
# lzop -dc): every cluster that salvaging that decoded prefix as a plain
# archive recovers must be recovered from the damaged file too (the same
# clusters for a cut; a zstd frame whose checksum fails comes out whole),
# from a file and from a pipe. SMALL has 35 extents of one 4 KiB block in
# 555,520 bytes: a whole extent was lost with every 1 MiB window that
# ended in the decoder's error, so a cut SMALL gave nothing at all.
truncate -s 128M "$T/small.raw"
for k in $(seq 0 127); do
    seq $((k * 1000)) $((k * 1000 + 900)) | head -c 4096 |
        dd of="$T/small.raw" bs=4096 seek=$((k * 256 + k % 16)) conv=notrunc status=none
done
"$VMA" create "$T/small.vma" -c "$G/basic.conf" drive-scsi0="$T/small.raw" >/dev/null 2>&1 ||
    fail "create of the small archive failed"
check "the small archive has 35 extents in under 1 MiB" \
    [ "$(stat -c %s "$T/small.vma")" = 555520 ]

# The recovered clusters of a verify --salvage JSON report on stdin.
recovered() {
    jq -r '.devices[]? | .id as $id | .recovered[] | "\($id) \(.offset) \(.length)"' |
        awk '{for (c = int($2 / 65536); c * 65536 < $2 + $3; c++) print $1, c}' | sort
}
for c in zst gz lzo; do
    case $c in
    zst) tool=zstd ;;
    gz) tool=gzip ;;
    lzo) tool=lzop ;;
    esac
    $tool -q -c "$T/small.vma" >"$T/small.vma.$c"
    for src in small basic; do
        if [ $src = small ]; then orig=$T/small.vma.$c; else orig=$G/basic.vma.$c; fi
        len=$(stat -c %s "$orig")
        for how in cut-half cut-end zero-half zero-end; do
            case_ "$c-$src-$how: what $tool -dc decodes"
            f=$T/d.vma.$c
            cp "$orig" "$f"
            case $how in
            cut-half) truncate -s $((len / 2)) "$f" ;;
            cut-end) truncate -s $((len - 20)) "$f" ;;
            zero-half) dd if=/dev/zero of="$f" bs=1 seek=$((len / 2)) count=64 conv=notrunc status=none ;;
            zero-end) dd if=/dev/zero of="$f" bs=1 seek=$((len * 9 / 10)) count=64 conv=notrunc status=none ;;
            esac
            $tool -dc "$f" >"$T/prefix.vma" 2>/dev/null
            check "$c $src $how: $tool -dc fails" [ $? != 0 ]
            "$VMA" verify --salvage --output-format=json "$T/prefix.vma" 2>/dev/null | recovered >"$T/want"
            "$VMA" verify --salvage --output-format=json "$f" 2>/dev/null | recovered >"$T/got"
            "$VMA" verify --salvage --output-format=json - <"$f" 2>/dev/null | recovered >"$T/got-pipe"
            [ $src = small ] && [ $how = cut-end ] &&
                check "$c $src $how: the decoded prefix holds clusters" [ -s "$T/want" ]
            for g in got got-pipe; do
                CHECKS=$((CHECKS + 1))
                if [ -n "$(comm -23 "$T/want" "$T/$g")" ]; then
                    fail "$c $src $how ($g): $(comm -23 "$T/want" "$T/$g" | wc -l) clusters that $tool -dc gives are not recovered ($(wc -l <"$T/$g") of $(wc -l <"$T/want"))"
                fi
                case $how in cut-*)
                    check "$c $src $how ($g): the same clusters as the decoded prefix" \
                        cmp -s "$T/want" "$T/$g" ;;
                esac
            done
        done
    done
done

# --- usage and refusals ------------------------------------------------
case_ usage
run "$VMA" extract --salvage "$A"
expect_rc 1
run "$VMA" list --salvage "$A"
expect_rc 1
run "$VMA" verify --force-header "$A"
expect_rc 1
run "$VMA" extract --salvage --output-format=json "$A" "$T/s-json"
expect_rc 1
mkdir "$T/exists"
run "$VMA" extract --salvage "$A" "$T/exists"
expect_failure
check "existing directory left alone" [ -z "$(ls -A "$T/exists")" ]
run "$VMA" verify --salvage "$T/missing.vma"
expect_failure

done_
