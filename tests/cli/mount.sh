# Random access from outside: `vma mount` (FUSE) and the nbdkit plugin.
# For every golden archive and for archives made here with `vma create`
# (odd sizes, several disks, vmstate): every byte of every mounted file
# and of every export equals what `vma extract` writes; SEEK_DATA and
# SEEK_HOLE, and the plugin's block status, agree with the zero blocks;
# the saved index is reused, and refused once stale or foreign; a mount
# with a damaged archive fails before mounting; file-level restore of an
# ext4 disk with debugfs through the mount and the export; a qcow2
# copy-on-write overlay on the export takes writes, the archive unchanged;
# mount --salvage serves what extract --salvage writes, lost clusters EIO.
# Services listen on unix sockets in $T and are stopped by the EXIT trap.
# Usage: mount.sh <vma> <golden> <vma_craft> <nbdkit plugin>
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
PLUGIN=$4
PY=/usr/bin/python3
SEEKMAP=$(dirname "$0")/seekmap.py

for tool in fusermount3 nbdkit qemu-img qemu-io nbdcopy nbdinfo debugfs mkfs.ext4 mountpoint; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed" >&2; exit 77; }
done
[ -c /dev/fuse ] && [ -x "$PY" ] || { echo "SKIP: no /dev/fuse or $PY" >&2; exit 77; }

# A sanitizer build's plugin needs its runtimes loaded first into nbdkit,
# which is not built with them (nbdkit's own allocations are not ours to
# leak-check).
SAN_PRELOAD=$(ldd "$PLUGIN" 2>/dev/null | awk '/lib(asan|ubsan)\.so/ { print $3 }' | tr '\n' ' ')
nbdkit_run() {
    if [ -n "$SAN_PRELOAD" ]; then
        LD_PRELOAD="$SAN_PRELOAD" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
            nbdkit "$@"
    else
        nbdkit "$@"
    fi
}

# The default index place is the user's cache: $XDG_CACHE_HOME/vmarchive
# (common.sh puts it under $T).
IDXC=$XDG_CACHE_HOME/vmarchive
# The cases before the cache's own write beside the archive, where they
# look for it (IDX=: the default).
IDX=--index=beside

MOUNTS=()
PIDS=()
cleanup() {
    local m p
    for m in "${MOUNTS[@]}"; do
        mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"
    done
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT

check() {
    local what=$1
    shift
    CHECKS=$((CHECKS + 1))
    "$@" || fail "$what"
}

# do_mount ARCHIVE DIR [options]: mount in the background, recorded for cleanup.
do_mount() {
    local archive=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    MOUNTS+=("$dir")
    run "$VMA" mount ${IDX:+"$IDX"} "$@" "$archive" "$dir"
    expect_rc 0
    mountpoint -q "$dir" || fail "$dir is not mounted"
}

do_umount() {
    fusermount3 -u "$1" || fail "fusermount3 -u $1"
}

# serve ARCHIVE DEVICE: nbdkit on $T/nbd.sock; sets URI.
serve() {
    rm -f "$T/nbd.sock" "$T/nbd.pid"
    nbdkit_run -U "$T/nbd.sock" -P "$T/nbd.pid" "$PLUGIN" archive="$1" device="$2" \
        ${IDX:+"${IDX#--}"} 2>"$T/nbd.err" || { fail "nbdkit did not start: $(cat "$T/nbd.err")"; return 1; }
    for _ in $(seq 100); do [ -s "$T/nbd.pid" ] && break; sleep 0.05; done
    PIDS+=("$(cat "$T/nbd.pid")")
    URI="nbd+unix:///?socket=$T/nbd.sock"
}

# unserve: stop nbdkit; it must exit within 10 s (its unload frees the
# image after nbdkit forked: nothing of the open may hang there).
unserve() {
    local pid
    pid=$(cat "$T/nbd.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
        if [ "${1:-}" = san-exit-hang-known ] && [ -n "$SAN_PRELOAD" ]; then
            # Known, outside our code: with the sanitizer runtime preloaded
            # into nbdkit (not built with it), after error replies nbdkit
            # hangs at exit in libp11-kit's destructor (freelocale waits
            # for glibc's setlocale lock). Every check before it ran; the
            # gcc build runs this case with a clean exit.
            echo "mount.sh: nbdkit $pid hung at exit under the sanitizer preload (known): killed" >&2
        else
            fail "nbdkit $pid did not exit after SIGTERM"
        fi
        kill -9 "$pid" 2>/dev/null
    fi
}

# Data ranges of an export from nbdinfo --map, merged, as "start end" lines.
nbd_map() {
    nbdinfo --map "$1" | awk '
        $3 == 0 { if (have && $1 == e) { e = $1 + $2 } else { if (have) print s, e; s = $1; e = $1 + $2; have = 1 } }
        END { if (have) print s, e }'
}

# compare ARCHIVE NAME: mount it, extract it, and compare everything.
compare() {
    local archive=$1 name=$2 f base want
    case_ "$name: mount and extract agree"
    "$VMA" extract "$archive" "$T/x-$name" >/dev/null 2>"$T/err" || {
        fail "extract failed: $(cat "$T/err")"
        return
    }
    do_mount "$archive" "$T/m-$name"
    # Every extracted file has its twin in the mount, and nothing else is there.
    local nx nm
    nx=$(ls "$T/x-$name" | wc -l)
    nm=$(ls "$T/m-$name" | wc -l)
    check "file count: mount $nm, extract $nx" [ "$nx" = "$nm" ]
    for f in "$T/x-$name"/*; do
        base=${f##*/}
        case $base in
        disk-*.raw) want=${base#disk-} ;;
        *) want=$base ;;
        esac
        check "$want equals the extracted $base" cmp -s "$f" "$T/m-$name/$want"
        check "$want: size" [ "$(stat -c %s "$f")" = "$(stat -c %s "$T/m-$name/$want")" ]
        # Random ranges (odd offsets and lengths), each read on its own.
        local size off len i
        size=$(stat -c %s "$f")
        for i in 1 2 3 4 5; do
            off=$(((RANDOM * 32768 + RANDOM) % (size + 1)))
            len=$((RANDOM * 7 % 200000 + 1))
            check "$want bytes $off+$len" cmp -s -i "$off" -n "$len" "$f" "$T/m-$name/$want"
        done
        case $want in
        *.raw)
            check "$want: SEEK_DATA/SEEK_HOLE agree with the zero blocks" \
                "$PY" "$SEEKMAP" "$T/m-$name/$want" exact >"$T/map.mount"
            check "$want: cp --sparse=always copies every byte" \
                cp --sparse=always "$T/m-$name/$want" "$T/copy.raw"
            check "$want: the sparse copy" cmp -s "$f" "$T/copy.raw"
            serve "$archive" "${want%.raw}" || continue
            check "$want: qemu-img convert from the export" \
                qemu-img convert -f raw -O raw "$URI" "$T/q.raw"
            check "$want: the export equals the extracted disk" cmp -s "$f" "$T/q.raw"
            nbd_map "$URI" >"$T/map.nbd"
            check "$want: the export's block status equals SEEK_DATA/SEEK_HOLE" \
                cmp -s "$T/map.mount" "$T/map.nbd"
            unserve
            ;;
        esac
    done
    do_umount "$T/m-$name"
}

RANDOM=4242
mkdir -p "$T/a"
for g in basic.vma basic.vma.gz basic.vma.lzo basic.vma.zst diskless.vma legacy.vma \
    odd-sizes.vma zero-disk.vma; do
    cp "$G/$g" "$T/a/$g"
    compare "$T/a/$g" "$g"
done

# --- archives made here: odd sizes, several disks, holes, vmstate ------
case_ "vma create archives"
gen() { head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$1" -iv 0 2>/dev/null; }
truncate -s $((3 * 1024 * 1024 + 1536)) "$T/d0.raw"
gen 00112233445566778899aabbccddeeff 200000 | dd of="$T/d0.raw" conv=notrunc status=none
gen 0f1e2d3c4b5a69788796a5b4c3d2e1f0 70000 | dd of="$T/d0.raw" bs=1 seek=2000000 conv=notrunc status=none
echo "tail" | dd of="$T/d0.raw" bs=1 seek=$((3 * 1024 * 1024 + 1500)) conv=notrunc status=none
gen 102030405060708090a0b0c0d0e0f000 777777 >"$T/d1.raw"
truncate -s 5000 "$T/d2.raw"
echo config >"$T/qemu-server.conf"
for codec in none zstd gzip lzo; do
    run "$VMA" create --compress=$codec "$T/a/made-$codec.vma" -c "$T/qemu-server.conf" \
        drive-scsi0="$T/d0.raw" drive-virtio1="$T/d1.raw" drive-sata2="$T/d2.raw"
    expect_rc 0
    compare "$T/a/made-$codec.vma" "made-$codec"
done
# Two gzip members (as `cat a.gz b.gz` makes): each starts an access point.
{ head -c 700000 "$T/a/made-none.vma" | gzip -1; tail -c +700001 "$T/a/made-none.vma" | gzip -9; } \
    >"$T/a/made-2members.vma.gz"
compare "$T/a/made-2members.vma.gz" made-2members
"$CRAFT" vmstate "$T/a/vms.vma" "$T/vms.expect" "$T/vmsdisk.expect" || fail "vma_craft vmstate"
compare "$T/a/vms.vma" vmstate
case_ "vmstate.bin of the mount"
do_mount "$T/a/vms.vma" "$T/m-vms2"
check "vmstate.bin equals the stream" cmp -s "$T/vms.expect" "$T/m-vms2/vmstate.bin"
do_umount "$T/m-vms2"

case_ "a zstd archive: the cache is announced, goes to -c <dir> and leaves nothing"
mkdir -p "$T/cache"
do_mount "$T/a/basic.vma.zst" "$T/m-cache" -c "$T/cache"
expect_err "vma: decompressing $T/a/basic.vma.zst into a sparse cache in $T/cache (up to 8.5 MiB)
"
check "the cache file is unlinked" [ -z "$(ls -A "$T/cache")" ]
check "served from the cache" cmp -s "$T/x-basic.vma.zst/disk-drive-scsi0.raw" "$T/m-cache/drive-scsi0.raw"
do_umount "$T/m-cache"
check "nothing left in the cache dir" [ -z "$(ls -A "$T/cache")" ]
case_ "a zstd archive from vma create (seekable): read in place, no cache"
do_mount "$T/a/made-zstd.vma" "$T/m-inplace" -c "$T/none"
expect_err_empty
check "read in place" cmp -s "$T/x-made-zstd/disk-drive-scsi0.raw" "$T/m-inplace/drive-scsi0.raw"
do_umount "$T/m-inplace"
run "$VMA" mount -c "$T/none" "$T/a/basic.vma.gz" "$T/m-cache"
expect_rc 2
grep -q "^vma: cannot make a cache file in $T/none: No such file or directory" "$T/err" ||
    fail "missing cache dir: $(cat "$T/err")"

# --- the saved index --------------------------------------------------
case_ "index file: saved, reused, refused when stale or foreign"
A=$T/a/made-none.vma
check "made-none.vma.vmaidx was saved" [ -s "$A.vmaidx" ]
# Also for archives read in place by offsets in their decompressed stream;
# not for a .vma.gz (access points) nor a cached single-frame .vma.zst.
check "an index for a .vma.lzo" [ -s "$T/a/made-lzo.vma.vmaidx" ]
check "an index for a seekable .vma.zst" [ -s "$T/a/made-zstd.vma.vmaidx" ]
check "no index for a .vma.gz" [ ! -e "$T/a/made-gzip.vma.vmaidx" ]
check "no index for a single-frame .vma.zst" [ ! -e "$T/a/basic.vma.zst.vmaidx" ]
for codec in lzo zstd; do
    do_mount "$T/a/made-$codec.vma" "$T/m-idx-$codec"
    for f in "$T/x-made-$codec"/disk-*.raw; do
        base=${f##*/disk-}
        check "made-$codec through its saved index: $base" cmp -s "$f" "$T/m-idx-$codec/$base"
    done
    do_umount "$T/m-idx-$codec"
done
sum_before=$(sha256sum <"$A")
touch -d '2020-01-01 00:00' "$A"
mkdir -p "$T/m-stale"
run "$VMA" mount --index=beside "$A" "$T/m-stale"
expect_rc 2
expect_err "vma: index $A.vmaidx refused: the archive changed after it was indexed (its ctime differs) (remove it, or reindex)
"
check "nothing mounted after a refusal" sh -c "! mountpoint -q '$T/m-stale'"
do_mount "$A" "$T/m-stale" -r
check "reindexed mount reads" cmp -s "$T/x-made-none/disk-drive-scsi0.raw" "$T/m-stale/drive-scsi0.raw"
do_umount "$T/m-stale"
cp "$T/a/made-none.vma.vmaidx" "$T/keep.vmaidx"
cp "$T/a/basic.vma.vmaidx" "$A.vmaidx"
run "$VMA" mount --index=beside "$A" "$T/m-stale"
expect_rc 2
expect_err "vma: index $A.vmaidx refused: it belongs to another archive (uuid differs) (remove it, or reindex)
"
head -c $(($(stat -c %s "$T/keep.vmaidx") - 13)) "$T/keep.vmaidx" >"$A.vmaidx"
run "$VMA" mount --index=beside "$A" "$T/m-stale"
expect_rc 2
expect_err "vma: index $A.vmaidx refused: its size does not match its entry counts (remove it, or reindex)
"
cp "$T/keep.vmaidx" "$A.vmaidx"
printf '\x77' | dd of="$A.vmaidx" bs=1 seek=200 conv=notrunc status=none
run "$VMA" mount --index=beside "$A" "$T/m-stale"
expect_rc 2
grep -q "refused: .*checksum\|refused: .*out of order or out of bounds" "$T/err" ||
    fail "a damaged index: $(cat "$T/err")"
do_mount "$A" "$T/m-stale" -n
check "-n ignores the index" cmp -s "$T/x-made-none/disk-drive-scsi0.raw" "$T/m-stale/drive-scsi0.raw"
do_umount "$T/m-stale"
# A FIFO under the index's name: refused at once, not waited on.
rm -f "$A.vmaidx"
mkfifo "$A.vmaidx"
run timeout 20 "$VMA" mount --index=beside "$A" "$T/m-stale"
expect_rc 2
expect_err "vma: index $A.vmaidx refused: not a regular file (remove it, or reindex)
"
check "nothing mounted for a FIFO index" sh -c "! mountpoint -q '$T/m-stale'"
rm -f "$A.vmaidx"

# A forged index: two whole clusters trade their offsets, the SHA-256 made
# anew, as anyone who reads the archive can. The loader takes it; reads
# then fail (EIO) or return the archive's bytes, never the other
# cluster's, and the index is removed so that the next mount rebuilds it.
case_ "a forged index never serves another cluster's bytes"
forge() {
    python3 - "$1" <<'PY'
import hashlib, struct, sys
path = sys.argv[1]
b = bytearray(open(path, 'rb').read())
ndev = struct.unpack_from('<I', b, 36)[0]
at, whole = 64 + 24 * ndev, []
for k in range(ndev):
    count = struct.unpack_from('<Q', b, 64 + 24 * k + 8)[0]
    for e in range(count):
        if b[at + 4:at + 6] == b'\xff\xff' and len(whole) < 2:
            whole.append(at)
        at += 12
x, y = whole
b[x + 6:x + 12], b[y + 6:y + 12] = b[y + 6:y + 12], b[x + 6:x + 12]
b[-32:] = hashlib.sha256(b[:-32]).digest()
open(path, 'wb').write(b)
PY
}
# reads DIR: every disk of made-none read whole: "ok" when it equals the
# extract, "eio" when the read failed so, else "WRONG".
reads() {
    local f out
    for f in "$T"/x-made-none/disk-*.raw; do
        if out=$(cat "$1/${f##*/disk-}" 2>&1 >"$T/forged.raw"); then
            cmp -s "$f" "$T/forged.raw" && echo ok || echo WRONG
        else
            case $out in *"Input/output error"*) echo eio ;; *) echo "WRONG $out" ;; esac
        fi
    done
}
do_mount "$A" "$T/m-forged"
do_umount "$T/m-forged"
check "an index was saved again" [ -s "$A.vmaidx" ]
forge "$A.vmaidx"
do_mount "$A" "$T/m-forged"
got=$(reads "$T/m-forged")
do_umount "$T/m-forged"
check "mount with a forged index: no wrong bytes ($got)" sh -c "! echo '$got' | grep -q WRONG"
check "mount with a forged index: a read failed" sh -c "echo '$got' | grep -q eio"
check "the forged index was removed" [ ! -e "$A.vmaidx" ]
do_mount "$A" "$T/m-forged"
got=$(reads "$T/m-forged")
do_umount "$T/m-forged"
check "the next mount rebuilt it and reads right ($got)" sh -c "! echo '$got' | grep -qv ok"
check "a new index was saved" [ -s "$A.vmaidx" ]
# The swapped clusters are drive-scsi0's (its first 200000 bytes are data).
rm -f "$A.vmaidx"
do_mount "$A" "$T/m-forged"
do_umount "$T/m-forged"
forge "$A.vmaidx"
serve "$A" drive-scsi0
if nbdcopy "$URI" "$T/forged-nbd.raw" 2>"$T/nbdcopy.err"; then
    check "nbdkit with a forged index: the archive's bytes" \
        cmp -s "$T/x-made-none/disk-drive-scsi0.raw" "$T/forged-nbd.raw"
else
    # nbdkit logs the message to syslog once in the background.
    check "nbdkit with a forged index: EIO ($(cat "$T/nbdcopy.err"))" \
        grep -q "Input/output error" "$T/nbdcopy.err"
    check "nbdkit with a forged index: the index was removed" [ ! -e "$A.vmaidx" ]
fi
unserve san-exit-hang-known
rm -f "$A.vmaidx"
check "the archive was never written" [ "$(sha256sum <"$A")" = "$sum_before" ]

# --- the index in the user's cache (the default) ------------------------
# Nothing beside the archive: <uuid>-<size>.vmaidx in $XDG_CACHE_HOME/vmarchive,
# reused by the next mount and by nbdkit; --index=off and -n write none.
case_ "index in the user's cache by default; beside and off on request"
IDX=
A=$T/a/made-lzo.vma
rm -rf "$IDXC" "$A.vmaidx"
do_mount "$A" "$T/m-idxc"
check "no index beside the archive" [ ! -e "$A.vmaidx" ]
idxc=$(find "$IDXC" -name '*.vmaidx' 2>/dev/null)
check "one index in the cache, named by uuid, size, device and inode" \
    [ "$(echo "$idxc" | grep -cE "/[0-9a-f]{32}-$(stat -c %s-%d-%i "$A")\.vmaidx\$")" = 1 ]
check "the cache directory is the user's alone" [ "$(stat -c %a "$IDXC")" = 700 ]
check "served as extract writes it" cmp -s "$T/x-made-lzo/disk-drive-scsi0.raw" "$T/m-idxc/drive-scsi0.raw"
do_umount "$T/m-idxc"
touch -d @1000000000 "$idxc"
do_mount "$A" "$T/m-idxc"
check "the next mount used it (marked used)" [ "$(stat -c %Y "$idxc")" -gt 1000000000 ]
check "reused index, same bytes" cmp -s "$T/x-made-lzo/disk-drive-scsi0.raw" "$T/m-idxc/drive-scsi0.raw"
do_umount "$T/m-idxc"
# A stale index of the cache is ours to replace, not an error.
touch "$A"
do_mount "$A" "$T/m-idxc"
expect_err_empty
check "a stale cached index is rebuilt" [ "$(stat -c %Y "$idxc")" -ge "$(stat -c %Y "$A")" ]
do_umount "$T/m-idxc"
serve "$A" drive-scsi0
nbdcopy "$URI" "$T/idxc-nbd.raw" 2>"$T/nbdcopy.err"
check "nbdkit with the cached index" cmp -s "$T/x-made-lzo/disk-drive-scsi0.raw" "$T/idxc-nbd.raw"
unserve
check "still no index beside the archive" [ ! -e "$A.vmaidx" ]
rm -rf "$IDXC"
for opt in --index=off -n; do
    do_mount "$A" "$T/m-idxc" $opt
    do_umount "$T/m-idxc"
    check "$opt: no index anywhere" [ ! -e "$A.vmaidx" ] && [ -z "$(find "$IDXC" -name '*.vmaidx' 2>/dev/null)" ]
done
do_mount "$A" "$T/m-idxc" --index=beside
do_umount "$T/m-idxc"
check "--index=beside: beside the archive" [ -s "$A.vmaidx" ]
rm -f "$A.vmaidx"
run "$VMA" mount --index=elsewhere "$A" "$T/m-idxc"
expect_rc 2
expect_err "vma: mount: unknown --index=elsewhere (cache, beside or off)
"
rm -f "$T/nbd.pid"
run nbdkit_run -U "$T/nbd.sock" -f "$PLUGIN" archive="$A" device=drive-scsi0 index=elsewhere
check "plugin: unknown index= refused" grep -q "index=elsewhere: say cache, beside or off" "$T/err"
IDX=--index=beside

# --- damage -----------------------------------------------------------
case_ "a damaged archive is refused before mounting"
cp "$G/basic.vma" "$T/bad.vma"
# A byte of the first extent's blockinfo (the extent header follows the
# header, whose size is the big-endian u32 at byte 56).
hsize=$(od -An -tu1 -j56 -N4 "$T/bad.vma" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
printf '\x55' | dd of="$T/bad.vma" bs=1 seek=$((hsize + 45)) conv=notrunc status=none
mkdir -p "$T/m-bad"
run "$VMA" mount "$T/bad.vma" "$T/m-bad"
expect_rc 2
check "one line on stderr: $(cat "$T/err")" [ "$(wc -l <"$T/err")" = 1 ]
grep -q '^vma: extent 0 at offset' "$T/err" || fail "message: $(cat "$T/err")"
check "nothing mounted" sh -c "! mountpoint -q '$T/m-bad'"

case_ "archive cut short after mounting: EIO, never other bytes"
cp "$G/basic.vma" "$T/cut.vma"
do_mount "$T/cut.vma" "$T/m-cut" -n
truncate -s 1000000 "$T/cut.vma"
check "reading the lost data fails" sh -c "! cat '$T/m-cut/drive-scsi0.raw' >/dev/null 2>'$T/cat.err'"
grep -q 'Input/output error' "$T/cat.err" || fail "cat: $(cat "$T/cat.err")"
check "the config still reads" cmp -s "$G/basic.conf" "$T/m-cut/qemu-server.conf" ||
    cmp -s "$T/x-basic.vma/qemu-server.conf" "$T/m-cut/qemu-server.conf"
do_umount "$T/m-cut"

case_ "a .vma.lzo damaged after mounting: EIO for the reads that need the block, nothing else"
cp "$T/a/made-lzo.vma" "$T/dmg.vma"
do_mount "$T/dmg.vma" "$T/m-dmg"
size=$(stat -c %s "$T/dmg.vma")
printf '\x5a' | dd of="$T/dmg.vma" bs=1 seek=$((size / 2)) conv=notrunc status=none
run "$PY" - "$T/m-dmg" "$T/x-made-lzo" <<'EOF'
import errno, os, sys
mnt, ref = sys.argv[1], sys.argv[2]
failed = good = wrong = 0
for name in sorted(os.listdir(mnt)):
    if not name.endswith(".raw"):
        continue
    a = os.open(os.path.join(mnt, name), os.O_RDONLY)
    b = os.open(os.path.join(ref, "disk-" + name), os.O_RDONLY)
    size = os.fstat(b).st_size
    for off in range(0, size, 4096):
        try:
            got = os.pread(a, 4096, off)
        except OSError as e:
            failed += 1
            wrong += e.errno != errno.EIO
            continue
        if got == os.pread(b, 4096, off):
            good += 1
        else:
            wrong += 1
print(failed, good, wrong)
EOF
read -r failed good wrong <"$T/out"
check "EIO for one lzop block's reads: $failed failed, $good good, $wrong wrong" \
    test "${failed:-0}" -gt 0 -a "${failed:-99}" -le 66 -a "${wrong:-1}" = 0 -a "${good:-0}" -gt 100
echo "damaged lzop block through the mount: $failed reads failed (EIO), $good good, $wrong wrong"
do_umount "$T/m-dmg"

case_ "mount errors"
run "$VMA" mount "$T/none.vma" "$T/m-bad"
expect_rc 2
expect_err "vma: cannot open $T/none.vma: No such file or directory
"
run "$VMA" mount "$G/basic.vma" "$T/none"
expect_rc 2
expect_err "vma: mount: $T/none is not a directory
"
run "$VMA" mount -o rw "$G/basic.vma" "$T/m-bad"
expect_rc 2
run "$VMA" mount "$G/basic.vma"
expect_rc 1
check "nothing mounted after the errors" sh -c "! mountpoint -q '$T/m-bad'"

case_ "writes are refused; -o allow_other reaches the mount"
do_mount "$T/a/basic.vma" "$T/m-ro" -o allow_other
grep -q " $T/m-ro fuse.vma ro,.*allow_other" /proc/mounts ||
    fail "mount options: $(grep " $T/m-ro " /proc/mounts)"
check "no write" sh -c "! (echo x >>'$T/m-ro/qemu-server.conf') 2>/dev/null"
check "no new file" sh -c "! touch '$T/m-ro/new' 2>/dev/null"
do_umount "$T/m-ro"

case_ "mount options never come from the archive's name"
cp "$T/a/basic.vma" "$T/a/x.vma,allow_other"
cp "$T/a/basic.vma" "$T/a/y.vma\\,allow_other"
for name in "x.vma,allow_other" "y.vma\\,allow_other"; do
    do_mount "$T/a/$name" "$T/m-name"
    grep " $T/m-name " /proc/mounts | cut -d' ' -f4 >"$T/m-name.opts" # the options
    check "options $(cat "$T/m-name.opts") without allow_other (name $name)" \
        sh -c "grep -q default_permissions '$T/m-name.opts' && ! grep -q allow_other '$T/m-name.opts'"
    check "the disk reads as extracted" [ "$(sha256sum <"$T/m-name/drive-scsi0.raw" | cut -d' ' -f1)" = \
        "$(grep '/disk-drive-scsi0.raw$' "$G/basic.sha256" | cut -d' ' -f1)" ]
    do_umount "$T/m-name"
done

case_ "-f: Ctrl-C unmounts (relative paths: FUSE changes to / even with -f)"
mkdir -p "$T/m-fg"
MOUNTS+=("$T/m-fg")
(cd "$T" && exec "$VMA" mount -f a/basic.vma m-fg 2>"$T/fg.err") &
fg=$!
PIDS+=("$fg")
for _ in $(seq 100); do mountpoint -q "$T/m-fg" && break; sleep 0.05; done
check "-f mounted" mountpoint -q "$T/m-fg"
check "-f serves" cmp -s "$T/x-basic.vma/disk-drive-scsi0.raw" "$T/m-fg/drive-scsi0.raw"
kill -INT "$fg"
wait "$fg"
check "-f exits 0 after SIGINT (was $?)" [ $? = 0 ]
check "-f unmounted" sh -c "! mountpoint -q '$T/m-fg'"
check "-f said nothing: $(cat "$T/fg.err")" [ ! -s "$T/fg.err" ]

# --- mount --salvage ----------------------------------------------------
# A cut archive, plain and gzip'd: the mount serves exactly what extract
# --salvage writes (names, configs, reports); every cluster the report
# lists as lost fails with EIO, every other one equals the salvaged file,
# and SEEK_DATA finds each lost range (a sparse copy meets the error).
check_salvage_mount() { # mountdir extractdir
    "$PY" - "$1" "$2" <<'EOF' >"$T/out" 2>"$T/err"
import errno, json, os, sys
mnt, ref = sys.argv[1], sys.argv[2]
rep = json.load(open(os.path.join(ref, "salvage-report.json")))
lost_n = good = wrong = 0
for dev in rep["devices"]:
    name = ("salvaged-vmstate.bin" if dev["vmstate"] else "salvaged-disk-%s.raw" % dev["name"])
    a = os.open(os.path.join(mnt, name), os.O_RDONLY)
    b = os.open(os.path.join(ref, name), os.O_RDONLY)
    lost = [(r["offset"], r["offset"] + r["length"]) for r in dev["lost"]]
    for lo, hi in lost:
        if os.lseek(a, lo, os.SEEK_DATA) != lo:
            sys.exit("%s: SEEK_DATA skips the lost range at %d" % (name, lo))
    size = os.fstat(a).st_size
    for off in range(0, size, 65536):
        is_lost = any(lo <= off < hi for lo, hi in lost)
        try:
            got = os.pread(a, 65536, off)
        except OSError as e:
            if not is_lost or e.errno != errno.EIO:
                wrong += 1
            lost_n += 1
            continue
        if is_lost or got != os.pread(b, 65536, off):
            wrong += 1
        else:
            good += 1
print(lost_n, good, wrong)
EOF
}

salvage_case() { # archive name
    local a=$1 name=$2 lost good wrong
    case_ "mount --salvage of $name"
    run "$VMA" extract --salvage "$a" "$T/sx-$name"
    expect_rc 3
    mkdir -p "$T/ms-$name"
    MOUNTS+=("$T/ms-$name")
    run "$VMA" mount --salvage -c "$T" "$a" "$T/ms-$name"
    expect_rc 0
    grep -q '^vma: partial: some data lost (.*reads of lost ranges fail with EIO' "$T/err" ||
        fail "stderr: $(cat "$T/err")"
    check "the same files as extract --salvage" \
        [ "$(ls "$T/sx-$name")" = "$(ls "$T/ms-$name")" ]
    check "the same JSON report" cmp -s "$T/sx-$name/salvage-report.json" \
        "$T/ms-$name/salvage-report.json"
    check "the same text report" cmp -s "$T/sx-$name/salvage-report.txt" \
        "$T/ms-$name/salvage-report.txt"
    check "the same config" cmp -s "$T/sx-$name/qemu-server.conf" "$T/ms-$name/qemu-server.conf"
    check_salvage_mount "$T/ms-$name" "$T/sx-$name" || fail "check: $(cat "$T/err")"
    read -r lost good wrong <"$T/out"
    check "$name: $lost lost clusters fail with EIO, $good equal, $wrong wrong" \
        test "${lost:-0}" -gt 0 -a "${good:-0}" -gt 0 -a "${wrong:-1}" = 0
    echo "mount --salvage of $name: $lost lost clusters read EIO, $good equal, $wrong wrong"
    check "cp meets the lost range" sh -c \
        "! cp --sparse=always '$T/ms-$name/salvaged-disk-drive-scsi0.raw' '$T/sc.raw' 2>'$T/cp.err'"
    grep -q 'Input/output error' "$T/cp.err" || fail "cp: $(cat "$T/cp.err")"
    check "no index file written" [ ! -e "$a.vmaidx" ]
    do_umount "$T/ms-$name"
}
cp "$G/basic.vma" "$T/salv.vma"
truncate -s $(($(stat -c %s "$T/salv.vma") / 2)) "$T/salv.vma"
salvage_case "$T/salv.vma" cut-plain
head -c $(($(stat -c %s "$G/basic.vma.gz") * 2 / 3)) "$G/basic.vma.gz" >"$T/salv.vma.gz"
salvage_case "$T/salv.vma.gz" cut-gzip

case_ "mount --salvage -f: exit 3 after the unmount when data was lost"
mkdir -p "$T/ms-fg"
MOUNTS+=("$T/ms-fg")
"$VMA" mount -f --salvage "$T/salv.vma" "$T/ms-fg" 2>"$T/fg.err" &
fg=$!
for _ in $(seq 200); do mountpoint -q "$T/ms-fg" && break; sleep 0.05; done
check "mounted in the foreground" mountpoint -q "$T/ms-fg"
do_umount "$T/ms-fg"
wait "$fg"
RC=$?
check "exit 3 after the unmount (got $RC)" [ "$RC" = 3 ]

case_ "mount --salvage: nothing recoverable, nothing mounted"
head -c "$hsize" "$G/basic.vma" >"$T/hdr-only.vma"
truncate -s $((hsize + 300)) "$T/hdr-only.vma"
mkdir -p "$T/ms-none"
run "$VMA" mount --salvage "$T/hdr-only.vma" "$T/ms-none"
expect_rc 2
expect_err "vma: nothing could be recovered from $T/hdr-only.vma
"
check "nothing mounted" sh -c "! mountpoint -q '$T/ms-none'"
run "$VMA" mount --force-header "$T/salv.vma" "$T/ms-none"
expect_rc 1

# --- file-level restore: an ext4 disk ---------------------------------
case_ "debugfs reads a file of the backup's ext4 disk"
mkdir -p "$T/tree/etc"
echo "Hello from the libvma demo." >"$T/tree/hello.txt"
echo demo-vm >"$T/tree/etc/hostname"
truncate -s 64M "$T/ext4.raw"
mkfs.ext4 -q -F -d "$T/tree" "$T/ext4.raw"
run "$VMA" create "$T/a/vm.vma" -c "$T/qemu-server.conf" drive-scsi0="$T/ext4.raw"
expect_rc 0
do_mount "$T/a/vm.vma" "$T/m-vm"
run debugfs -R 'cat /hello.txt' "$T/m-vm/drive-scsi0.raw"
expect_out "Hello from the libvma demo.
"
do_umount "$T/m-vm"
serve "$T/a/vm.vma" drive-scsi0
check "nbdcopy of the export" nbdcopy "$URI" "$T/nbd-ext4.raw"
run debugfs -R 'cat /etc/hostname' "$T/nbd-ext4.raw"
expect_out "demo-vm
"

case_ "a qcow2 overlay on the export: reads the disk, takes writes, archive unchanged"
sum_before=$(sha256sum <"$T/a/vm.vma")
check "overlay created" qemu-img create -q -f qcow2 -b "$URI" -F raw "$T/overlay.qcow2"
check "overlay converted" qemu-img convert -f qcow2 -O raw "$T/overlay.qcow2" "$T/ov.raw"
check "overlay reads the backup's disk" cmp -s "$T/ext4.raw" "$T/ov.raw"
check "overlay takes a write" qemu-io -f qcow2 -c 'write -P 0xab 0 64k' "$T/overlay.qcow2"
run qemu-io -f qcow2 -c 'read -P 0xab 0 64k' "$T/overlay.qcow2"
expect_rc 0
check "the write reads back" grep -q 'read 65536/65536 bytes' "$T/out"
check "the export still serves the original" sh -c \
    "qemu-img convert -f raw -O raw '$URI' '$T/after.raw' && cmp -s '$T/ext4.raw' '$T/after.raw'"
unserve
check "the archive is unchanged" [ "$(sha256sum <"$T/a/vm.vma")" = "$sum_before" ]

case_ "plugin errors"
run nbdkit_run -U "$T/x.sock" -f "$PLUGIN" archive="$T/a/vm.vma" device=nope
check "unknown device refused" [ "$RC" != 0 ]
grep -q "has no device 'nope'" "$T/err" || fail "nbdkit: $(cat "$T/err")"
run nbdkit_run -U "$T/x.sock" -f "$PLUGIN" archive="$T/bad.vma" device=drive-scsi0
check "damaged archive refused" [ "$RC" != 0 ]
grep -q "extent 0 at offset" "$T/err" || fail "nbdkit: $(cat "$T/err")"

echo "mount.sh: $CHECKS checks, $FAILS failures"
[ "$FAILS" = 0 ]
