#!/usr/bin/env bash
# Seeds the fuzz corpus with small valid archives made by build/vma and
# the golden archives that are small, compressed streams made by the zstd,
# gzip and lzop tools, and restore map lines. Re-run only to refresh the
# seeds, then `fuzz/run.sh <target> merge`; the committed corpus is what
# the tests use.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
vma=${VMA:-$top/build/vma}
out=$top/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"/{header,verify,extract,restore_map,zstd,gzip,lzop,index,salvage,image,checksum}

# Deterministic bytes: a seeded keystream.
bytes() { (set +o pipefail; openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f \
          -iv "$(printf %032x "$1")" -nosalt </dev/zero 2>/dev/null | head -c "$2"); }

printf 'memory: 512\n' >"$tmp/qemu-server.conf"
bytes 01 4096 >"$tmp/one.raw"; truncate -s 8192 "$tmp/one.raw"
bytes 02 4097 >"$tmp/odd.raw"
bytes 03 1000 >"$tmp/tail.raw"; truncate -s 65537 "$tmp/tail.raw"
truncate -s 131072 "$tmp/zero.raw"

"$vma" create "$tmp/one.vma" -c "$tmp/qemu-server.conf" drive-scsi0="$tmp/one.raw"
"$vma" create "$tmp/two.vma" drive-a="$tmp/odd.raw" drive-b="$tmp/tail.raw"
"$vma" create "$tmp/zero.vma" drive-z="$tmp/zero.raw"
"$vma" create "$tmp/empty.vma"
cp "$top/tests/golden/diskless.vma" "$top/tests/golden/zero-disk.vma" "$tmp/"
# Compressed seeds lead the fuzzers into the zstd, gzip and lzop readers.
for c in zstd gzip lzo; do
    "$vma" create --compress=$c "$tmp/one-$c.vmaz" -c "$tmp/qemu-server.conf" drive-scsi0="$tmp/one.raw"
    cp "$tmp/one-$c.vmaz" "$out/verify/"
    cp "$tmp/one-$c.vmaz" "$out/extract/"
done

for f in "$tmp"/*.vma; do
    n=$(basename "$f" .vma)
    cp "$f" "$out/verify/$n.vma"
    cp "$f" "$out/extract/$n.vma"
    hsize=$(od -An -tu1 -j56 -N4 "$f" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
    head -c "$hsize" "$f" >"$out/header/$n.hdr"
done

# The codec targets: archives and small streams in each framing.
printf 'hello vma\n%.0s' {1..50} >"$tmp/text"
head -c 70000 /dev/zero >"$tmp/zeros"
cp "$tmp/one-zstd.vmaz" "$out/zstd/one.vma.zst"
zstd -q -19 -c "$tmp/two.vma" >"$out/zstd/two.vma.zst"
zstd -q -c "$tmp/text" >"$out/zstd/text.zst"
{ zstd -q -c "$tmp/text"; zstd -q -c "$tmp/zeros"; } >"$out/zstd/two-frames.zst"
{ printf '\x50\x2a\x4d\x18\x04\x00\x00\x00abcd'; zstd -q -c --no-check "$tmp/text"; } >"$out/zstd/skippable.zst"
cp "$tmp/one-gzip.vmaz" "$out/gzip/one.vma.gz"
gzip -9 -c "$tmp/two.vma" >"$out/gzip/two.vma.gz"
{ gzip -c "$tmp/text"; gzip -c "$tmp/zeros"; } >"$out/gzip/two-members.gz"
{ gzip -n -c "$tmp/text"; head -c 512 /dev/zero; } >"$out/gzip/padded.gz"
cp "$tmp/one-lzo.vmaz" "$out/lzop/one.vma.lzo"
lzop -9 -c "$tmp/two.vma" >"$out/lzop/two.vma.lzo"
lzop -c "$tmp/text" >"$out/lzop/text.lzo"
lzop -c --crc32 "$tmp/zeros" >"$out/lzop/crc32.lzo"
lzop -1 -c -n "$tmp/text" >"$out/lzop/noname.lzo"

# Salvage and random access: the archives in every framing (the seekable
# .zst of create, a single-frame one of the zstd tool), and each cut short
# in the middle (a codec error ends the stream).
for t in salvage image checksum; do
    cp "$tmp"/*.vma "$tmp"/one-*.vmaz "$out/$t/"
    zstd -q -c "$tmp/two.vma" >"$out/$t/two-single.vma.zst"
    gzip -c "$tmp/two.vma" >"$out/$t/two.vma.gz"
    lzop -c "$tmp/two.vma" >"$out/$t/two.vma.lzo"
    for f in "$tmp"/one-*.vmaz; do
        head -c $(($(stat -c %s "$f") / 2)) "$f" >"$out/$t/cut-$(basename "$f")"
    done
done

# checksum: clusters out of order (they wait, or spill).
"$top/build/tests/vma_craft" reverse 8 | zstd -q -1 >"$out/checksum/reverse-8.vma.zst"

# The restore map parser: one line per file, accepted and refused.
n=0
while IFS= read -r line; do
    n=$((n + 1))
    printf '%s' "$line" >"$out/restore_map/seed-$n"
done <<'EOF_MAP'
0:drive-scsi0=/tmp/disk.raw
1:drive-virtio0=/dev/vg/vm-100-disk-0
format=qcow2:throttling.bps=1048576:cache=none:1:drive-scsi1=disk.qcow2
throttling.group=g1:throttling.bps=0x100000:0:drive-sata0=nbd+unix:///x?socket=/tmp/s
cache=directsync:format=raw:0:drive-ide0=out.img
cache=writeback:cache=unsafe:0:a=b
skip=drive-scsi2
throttling.bps=12abc:0:a=b
0:=path
EOF_MAP
# The index target's fixed archive has one valid index: the target writes it.
echo -n x >"$tmp/any"
VMA_FUZZ_INDEX_SEED="$out/index/valid.vmaidx" "$top/build/fuzz/fuzz_index" "$tmp/any" >/dev/null
ls -l "$out"/*
