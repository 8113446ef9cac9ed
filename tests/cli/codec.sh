#!/usr/bin/env bash
# Codecs: every framing the reference tools accept reads as the
# plain archive does (zstd skippable and concatenated frames, pzstd's
# output, gzip members and zero padding, lzop's optional header fields);
# what they refuse is refused in one line that says where; the messages
# of a too-large zstd window, lzop block errors and failing exec:
# commands; the memory bound of create --compress=zstd.
# Usage: codec.sh <vma> <golden-dir> <vma_craft> <lzop_craft>
# SPDX-License-Identifier: MIT

LZOP_CRAFT=${4:?usage: codec.sh <vma> <golden-dir> <vma_craft> <lzop_craft>}
. "$(dirname "$0")/common.sh"

for tool in zstd gzip lzop; do
    command -v $tool >/dev/null || { echo "codec.sh: $tool not installed"; exit 77; }
done

P=$G/basic.vma        # the plain archive every framing must read like
SIZE=$(stat -c %s "$P")
HALF=1000001          # split point: inside an extent, not aligned

# run_on HOW FILE CMD [ARGS...]: vma CMD on FILE given by path (HOW=file)
# or through a pipe into standard input (HOW=pipe), then ARGS; as run.
run_on() {
    local how=$1 f=$2 cmd=$3
    shift 3
    if [ "$how" = file ]; then
        "$VMA" "$cmd" "$f" "$@" >"$T/out" 2>"$T/err"
    else
        cat "$f" | "$VMA" "$cmd" - "$@" >"$T/out" 2>"$T/err"
    fi
    RC=$?
}

# same_as_plain NAME FILE: list, verify and extract of FILE, from the file
# and from a pipe, give what they give for the plain archive.
same_as_plain() {
    local name=$1 f=$2 how d
    for how in file pipe; do
        case_ "$name: list ($how)"
        run_on $how "$f" list
        expect_ok
        expect_out_file "$G/basic.list"

        case_ "$name: verify ($how)"
        run_on $how "$f" verify
        expect_ok
        expect_out_empty

        case_ "$name: extract ($how)"
        d=$T/x
        run_on $how "$f" extract "$d"
        expect_ok
        dir_sha256 "$d" >"$T/got.sha256" 2>/dev/null
        check "sha256 after extract" cmp -s "$G/basic.sha256" "$T/got.sha256"
        rm -rf "$d"
    done
}

# refused NAME FILE MESSAGE: verify of FILE (file and pipe) fails in one
# line that is exactly "vma: verify failed - MESSAGE" or, for errors in the
# header, "vma: MESSAGE".
refused() {
    local name=$1 f=$2 msg=$3 how
    for how in file pipe; do
        case_ "$name: refused ($how)"
        run_on $how "$f" verify
        expect_failure
        expect_err "vma: $msg
"
    done
}

# skippable MAGIC_LOW_BYTE PAYLOAD: a zstd skippable frame.
skippable() {
    local len=${#2}
    printf "\\x$1\\x2a\\x4d\\x18\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))\\x00\\x00%s" "$2"
}

# --- zstd -----------------------------------------------------------------

head -c $HALF "$P" | zstd -q -c >"$T/part1.zst"
tail -c +$((HALF + 1)) "$P" | zstd -q -3 -c >"$T/part2.zst"
zstd -q -c "$P" >"$T/whole.zst"

{ skippable 50 "vma-test metadata"; cat "$T/whole.zst"; } >"$T/skip-first.zst"
cat "$T/part1.zst" "$T/part2.zst" >"$T/two-frames.zst"
{ skippable 5f ""; cat "$T/part1.zst"; skippable 5a "between"; skippable 53 "x";
  cat "$T/part2.zst"; skippable 57 "trailer"; } >"$T/mixed.zst"
for f in skip-first two-frames mixed; do
    check "zstd -t accepts $f.zst" zstd -q -t "$T/$f.zst"
    same_as_plain "zstd $f" "$T/$f.zst"
done
if command -v pzstd >/dev/null; then
    pzstd -q -p 2 -c "$P" >"$T/pzstd.zst"
    check "pzstd output starts with a skippable frame" \
        [ "$(head -c 4 "$T/pzstd.zst" | od -An -tx1 | tr -d ' ')" = 502a4d18 ]
    same_as_plain "pzstd -p 2" "$T/pzstd.zst"
else
    echo "codec.sh: pzstd not installed: its case skipped (the skippable frames are tested above)"
fi

# A skippable frame that says 100 bytes and holds 10, alone or after the
# archive's frames: truncated, with where the frame began.
{ skippable 50 "0123456789" | head -c 4; printf '\x64\x00\x00\x000123456789'; } >"$T/trunc-skip.zst"
refused "zstd truncated skippable frame" "$T/trunc-skip.zst" \
    "in the header at offset 0: zstd stream truncated after 18 compressed bytes (in the frame at compressed byte 0)"
W=$(stat -c %s "$T/whole.zst")
{ cat "$T/whole.zst"; head -c 18 "$T/trunc-skip.zst"; } >"$T/trunc-skip-end.zst"
refused "zstd truncated skippable frame at the end" "$T/trunc-skip-end.zst" \
    "verify failed - extent 3 at offset $SIZE: zstd stream truncated after $((W + 18)) compressed bytes (in the frame at compressed byte $W)"

# --long=31 (a 2 GiB window: zstd keeps it when it does not know the
# input's size): refused with the window's size and the way to read it.
cat "$P" | zstd -q --long=31 -c >"$T/long31.zst"
refused "zstd --long=31" "$T/long31.zst" \
    "in the header at offset 0: zstd frame at compressed byte 0 needs a 2048 MiB window, over the 128 MiB that vma decodes (written with --long?): read it with 'zstd -dc --long=31 <archive> | vma <command> -'"
case_ "zstd --long=31: the way the message gives"
zstd -q -dc --long=31 "$T/long31.zst" | "$VMA" verify - >"$T/out" 2>"$T/err"
RC=$?
expect_ok

# --- gzip -----------------------------------------------------------------

head -c $HALF "$P" | gzip -c >"$T/part1.gz"
tail -c +$((HALF + 1)) "$P" | gzip -1 -c >"$T/part2.gz"
gzip -c "$P" >"$T/whole.gz"
GZ=$(stat -c %s "$T/whole.gz")
cat "$T/part1.gz" "$T/part2.gz" >"$T/members.gz"
check "gzip -t accepts members.gz" gzip -t "$T/members.gz"
same_as_plain "gzip two members" "$T/members.gz"
# zeros after the last member: a byte, a tape block, more than a read chunk
for pad in 1 10240 1500000; do
    { cat "$T/members.gz"; head -c $pad /dev/zero; } >"$T/pad.gz"
    same_as_plain "gzip + $pad zero bytes" "$T/pad.gz"
done

{ cat "$T/whole.gz"; printf 'garbage'; } >"$T/garbage.gz"
refused "gzip + garbage" "$T/garbage.gz" \
    "verify failed - extent 3 at offset $SIZE: gzip: data at compressed byte $GZ after the member ending there is neither another gzip member nor zero padding"
{ cat "$T/whole.gz"; head -c 5000 /dev/zero; printf '\x1f\x8b'; } >"$T/pad-garbage.gz"
refused "gzip + zeros + a gzip magic" "$T/pad-garbage.gz" \
    "verify failed - extent 3 at offset $SIZE: gzip: non-zero byte at compressed byte $((GZ + 5000)) in the padding after the member ending at compressed byte $GZ"
{ cat "$T/whole.gz"; printf '\x1f\x00\x08\x00'; } >"$T/bad-member.gz"
refused "gzip + a broken member header" "$T/bad-member.gz" \
    "verify failed - extent 3 at offset $SIZE: gzip: data after the member ending at compressed byte $GZ is neither another gzip member nor zero padding (incorrect header check)"

# --- lzop -----------------------------------------------------------------

L=$G/basic.vma.lzo
for opts in "hcrc" "extra=vma-test" "hcrc extra=vma-test" "filter=0" "multipart"; do
    f=$T/lzo-${opts// /-}.lzo
    f=${f//=/-}
    check "lzop_craft $opts" "$LZOP_CRAFT" "$L" "$f" $opts
    lzop -t -q "$f" 2>/dev/null
    check "lzop -t accepts the header with $opts" [ $? != 1 ]
    same_as_plain "lzop header with $opts" "$f"
done
while IFS=$'\t' read -r opts msg; do
    "$LZOP_CRAFT" "$L" "$T/bad.lzo" $opts || fail "lzop_craft $opts"
    check "lzop -t refuses the header with $opts" sh -c "! lzop -t -q '$T/bad.lzo' 2>/dev/null"
    refused "lzop header with $opts" "$T/bad.lzo" "in the header at offset 0: $msg"
done <<'EOF'
filter=1	lzop filter 1 not supported
flags=0x4000	lzop header has unknown flags 0x4000
needed=0x1050	lzop file needs lzop version 1.050 to extract (supported: up to 1.040)
method=4	lzop method 4 not supported (only the LZO1X methods 1-3)
extra=x badextra	lzop header extra field checksum mismatch
EOF

# lzop block errors name the block and where it starts. Walk the blocks
# of basic.vma.lzo: its header, then per block dst_len, src_len, the
# data's Adler-32 (the only checksum flag it has), the data.
be32() { od -An -tu4 --endian=big -j "$2" -N 4 "$1" | tr -d ' '; }
flags=$(be32 "$L" 17)
check "basic.vma.lzo has only the data Adler-32" [ $((flags & 0x3fff)) = $((0x9)) ]
pos=$((21 + 12))
pos=$((pos + 1 + $(od -An -tu1 -j $pos -N 1 "$L" | tr -d ' ') + 4))
n=0
while :; do
    dst=$(be32 "$L" $pos)
    [ "$dst" = 0 ] && break
    src=$(be32 "$L" $((pos + 4)))
    start[$n]=$pos
    datalen[$n]=$src
    pos=$((pos + 12 + src))
    n=$((n + 1))
done
check "basic.vma.lzo has at least 5 blocks" [ $n -ge 5 ]
cp "$L" "$T/flip.lzo"
printf '\xff' | dd of="$T/flip.lzo" bs=1 seek=$((start[3] + 12 + datalen[3] / 2)) conv=notrunc status=none
for how in file pipe; do
    case_ "lzop corrupt block 3 ($how)"
    run_on $how "$T/flip.lzo" verify
    expect_failure
    expect_err_re "^vma: verify failed - .*: lzop block 3 at compressed byte ${start[3]}: (checksum mismatch|does not decompress)\$"
done
head -c $((start[4] + 12 + 100)) "$L" >"$T/cut.lzo"
case_ "lzop truncated in block 4"
run "$VMA" verify "$T/cut.lzo"
expect_failure
expect_err_re "^vma: verify failed - .*: lzop stream truncated in the data of block 4 at compressed byte ${start[4]} \\($((start[4] + 112)) compressed bytes in all\\)\$"

# --- exec: commands that fail ---------------------------------------------

head -c 2097152 "$P" >"$T/src.raw"
# exec_fails CMD MESSAGE: create into exec:CMD fails with exactly MESSAGE.
exec_fails() {
    case_ "create into exec:$1"
    run "$VMA" create "exec:$1" drive-scsi0="$T/src.raw"
    expect_failure
    expect_err "vma: $2
"
}
exec_fails "false" "the exec: command 'false' exited with status 1"
exec_fails "/nonexistent-cmd" \
    "the exec: command '/nonexistent-cmd' exited with status 127: $(sh -c /nonexistent-cmd 2>&1 </dev/null)"
exec_fails 'sh -c "exit 3"' "the exec: command 'sh -c \"exit 3\"' exited with status 3"
exec_fails 'cat >/dev/null; printf "x\033[31my\n" >&2; exit 4' \
    "the exec: command 'cat >/dev/null; printf \"x\\033[31my\\n\" >&2; exit 4' exited with status 4: x\\x1b[31my"
exec_fails 'kill -9 $$' "the exec: command 'kill -9 \$\$' was killed by signal 9 (Killed)"

case_ "create into exec:head -c 1000 >/dev/null"
run "$VMA" create "exec:head -c 1000 >/dev/null" drive-scsi0="$T/src.raw"
expect_failure
expect_err_re "^vma: the exec: command 'head -c 1000 >/dev/null' exited with status 0 before reading the whole archive \\(its input was closed at archive offset [0-9]+\\)\$"

case_ "create into exec: whose command prints two lines and fails"
run "$VMA" create 'exec:cat >/dev/null; echo first >&2; echo last >&2; exit 1' drive-scsi0="$T/src.raw"
expect_rc 2
expect_err "first
vma: the exec: command 'cat >/dev/null; echo first >&2; echo last >&2; exit 1' exited with status 1: last
"

case_ "create into exec: whose command succeeds keeps its stderr"
run "$VMA" create "exec:cat >'$T/ok.vma'; echo one >&2; printf two >&2" drive-scsi0="$T/src.raw"
expect_rc 0
expect_err "one
two
"
run "$VMA" verify "$T/ok.vma"
expect_ok

# --- memory of create --compress=zstd --------------------------------------

# Level 22 took about 680 MB before its bound (a 128 MiB window, 512 MiB
# of tables per worker); now level 19's window and tables, at most two
# workers: about 100 MB on a small image, the bound vma.h states is 256 MB.
# Sanitizer runtimes and valgrind add their own memory: plain builds only.
if ldd "$VMA" 2>/dev/null | grep -q 'lib[at]san' || nm "$VMA" 2>/dev/null | grep -q ' __asan_init'; then
    echo "codec.sh: memory bound not measured (sanitizer build)"
elif [ -x /usr/bin/time ] && [ -z "${VMA_RUNNER:-}" ]; then
    case_ "create --compress=zstd:22 stays under 256 MB"
    /usr/bin/time -f %M -o "$T/rss" "$VMA" create --compress=zstd:22 "$T/z22.vma.zst" \
        drive-scsi0="$T/src.raw" >"$T/out" 2>"$T/err"
    RC=$?
    expect_ok
    rss=$(tail -1 "$T/rss")
    check "peak RSS ${rss} KB under 256 MB" [ "$rss" -lt $((256 * 1024)) ]
    check "zstd reads it without --long" zstd -q -t "$T/z22.vma.zst"
    run "$VMA" verify "$T/z22.vma.zst"
    expect_ok
else
    echo "codec.sh: memory bound not measured (no /usr/bin/time, or under VMA_RUNNER)"
fi

done_
