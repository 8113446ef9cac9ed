#!/usr/bin/env bash
# Seeds the fuzz corpus with small valid archives made by build/vma and
# the golden archives that are small. Re-run only to refresh the seeds;
# the committed corpus is what the tests use.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
vma=${VMA:-$top/build/vma}
out=$top/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"/{header,verify,extract}

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
ls -l "$out"/*
