#!/bin/bash
# create --compress=zstd writes zstd's seekable format: 4 MiB frames of
# archive, each with zstd's checksum, then the seek table in a skippable
# frame (magic 0x184D2A5E; entries of compressed and decompressed size,
# no per-entry checksum) and the footer (frame count, descriptor 0, magic
# 0x8F92EAB1). zstd -t and zstd -dc read it, the table matches the
# frames, and vma reads it back; a truncated archive is refused.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
command -v zstd >/dev/null || { echo "SKIP: zstd is not installed" >&2; exit 77; }
[ -x "$PY" ] || { echo "SKIP: no $PY" >&2; exit 77; }

UUID=01234567-89ab-cdef-0123-456789abcdef
# About 11 MiB of compressible, non-zero data and an odd-sized small disk.
seq 1 1700000 >"$T/d0.raw"
seq 5 3 90000 >"$T/d1.raw"
truncate -s %512 "$T/d0.raw" "$T/d1.raw" # device sizes are whole sectors
echo config >"$T/qemu-server.conf"
mk() { # mk CODEC OUT
    run "$VMA" create --compress="$1" --uuid=$UUID --ctime=1700000000 "$2" \
        -c "$T/qemu-server.conf" drive-scsi0="$T/d0.raw" drive-virtio1="$T/d1.raw"
    expect_rc 0
}

case_ "zstd archive: zstd -t and zstd -dc read it, equal to the plain archive"
mk none "$T/p.vma"
mk zstd "$T/z.vma.zst"
check "zstd -t" zstd -q -t "$T/z.vma.zst"
zstd -q -dc "$T/z.vma.zst" >"$T/z.vma" 2>"$T/err" || fail "zstd -dc: $(cat "$T/err")"
check "zstd -dc gives the plain archive" cmp -s "$T/p.vma" "$T/z.vma"

case_ "zstd archive: the seek table matches the frames"
# seektable.py ZST PLAIN: the table's entries, checked against the file.
cat >"$T/seektable.py" <<'EOF'
import struct, sys
z = open(sys.argv[1], "rb").read()
plain = open(sys.argv[2], "rb").read()
n, desc, magic = struct.unpack("<IBI", z[-9:])
assert magic == 0x8F92EAB1, hex(magic)
assert desc == 0, desc                       # no per-entry checksums
start = len(z) - 9 - 8 * n - 8
skip, size = struct.unpack("<II", z[start:start + 8])
assert skip == 0x184D2A5E and size == 8 * n + 9, (hex(skip), size)
at = out = 0
for i in range(n):
    c, d = struct.unpack("<II", z[start + 8 + 8 * i:start + 16 + 8 * i])
    assert z[at:at + 4] == b"\x28\xb5\x2f\xfd", f"frame {i} at {at}: no zstd magic"
    assert z[at + 4] & 0x04, f"frame {i}: no content checksum"
    assert d == 4 << 20 or i == n - 1, f"frame {i}: {d} bytes"
    at += c
    out += d
assert at == start, (at, start)
assert out == len(plain), (out, len(plain))
print(n)
EOF
frames=$("$PY" "$T/seektable.py" "$T/z.vma.zst" "$T/p.vma" 2>"$T/err") || fail "$(tail -1 "$T/err")"
want=$((($(stat -c %s "$T/p.vma") + (4 << 20) - 1) / (4 << 20)))
check "$frames frames, $want expected (4 MiB each)" [ "$frames" = "$want" ]
check "several frames" [ "$frames" -ge 3 ]

case_ "zstd archive: vma verify and extract read it"
run "$VMA" verify "$T/z.vma.zst"
expect_rc 0
run "$VMA" extract "$T/z.vma.zst" "$T/x"
expect_rc 0
check "disk 0 extracted" cmp -s "$T/d0.raw" "$T/x/disk-drive-scsi0.raw"
check "disk 1 extracted" cmp -s "$T/d1.raw" "$T/x/disk-drive-virtio1.raw"

case_ "zstd archive: decoded on several cores, every frame checked"
# (verify and extract of a regular file decode frames in a thread pool;
# through a pipe the same archive is one stream, as before)
run sh -c "cat '$T/z.vma.zst' | '$VMA' verify -"
expect_rc 0
# setsize N SIZE: the seek table entry of frame N says SIZE decompressed bytes.
setsize() {
    cp "$T/z.vma.zst" "$T/bad.vma.zst"
    "$PY" - "$T/bad.vma.zst" "$1" "$2" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], "r+b")
z = f.read()
n = struct.unpack("<I", z[-9:-5])[0]
f.seek(len(z) - 9 - 8 * n + 8 * int(sys.argv[2]) + 4)
f.write(struct.pack("<I", int(sys.argv[3])))
PYEOF
}
off1=$("$PY" -c "import struct,sys; z=open(sys.argv[1],'rb').read(); n=struct.unpack('<I',z[-9:-5])[0]; print(struct.unpack('<I',z[len(z)-9-8*n:len(z)-9-8*n+4])[0])" "$T/z.vma.zst")
setsize 1 4194303
run "$VMA" verify "$T/bad.vma.zst"
expect_rc 2
expect_err_has "zstd frame 1 at compressed byte $off1 decompresses to more than the 4194303 bytes the seek table says"
setsize 1 4194305
run "$VMA" verify "$T/bad.vma.zst"
expect_rc 2
expect_err_has "zstd frame 1 at compressed byte $off1 decompresses to 4194304 bytes, the seek table says 4194305"
cp "$T/z.vma.zst" "$T/bad.vma.zst"
printf 'XXXX' | dd of="$T/bad.vma.zst" bs=1 seek=$((off1 + 1000)) conv=notrunc status=none
run "$VMA" extract "$T/bad.vma.zst" "$T/xbad"
expect_rc 2
expect_err_has "zstd frame 1 at compressed byte $off1 is corrupt"

case_ "zstd archive at level 19: seekable too"
mk zstd:19 "$T/z19.vma.zst"
"$PY" "$T/seektable.py" "$T/z19.vma.zst" "$T/p.vma" >/dev/null 2>"$T/err" || fail "$(tail -1 "$T/err")"

case_ "negative: an archive cut inside its frames is refused"
head -c 300000 "$T/z.vma.zst" >"$T/cut.vma.zst"
run "$VMA" verify "$T/cut.vma.zst"
check "verify of a cut archive fails" [ "$RC" -ne 0 ]
check "one vma: line" grep -q '^vma: ' "$T/err"
"$PY" "$T/seektable.py" "$T/cut.vma.zst" "$T/p.vma" >/dev/null 2>&1 &&
    fail "a cut archive passed the seek table check"

done_
