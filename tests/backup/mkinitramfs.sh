#!/bin/bash
# Builds the initramfs of the real-guest backup test (tests/backup/guest.py):
# busybox-static, qemu-ga with the libraries ldd lists and the dynamic
# loader, the virtio modules the guest needs (virtio_pci, virtio_blk,
# virtio_console and what they depend on, in load order, decompressed) and
# tests/backup/guest-init as /init.
#
# Usage: mkinitramfs.sh <outfile> [<kernel-version>]
# Without a version, the first /boot/vmlinuz-*-cloud-amd64 is used.
# MODDIR in the environment: the module tree to use instead of
# /lib/modules/<version> (to try .ko.xz modules, for instance).
# Exits 77 when something it needs is not installed (busybox-static,
# qemu-guest-agent, the kernel's modules, cpio), 1 on other failures.
# SPDX-License-Identifier: MIT
set -eu -o pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 <outfile> [<kernel-version>]" >&2
    exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)

skip() { echo "mkinitramfs: $*" >&2; exit 77; }
die() { echo "mkinitramfs: $*" >&2; exit 1; }

if [ $# -ge 2 ]; then
    kver=$2
else
    kver=
    for k in /boot/vmlinuz-*-cloud-amd64; do
        [ -e "$k" ] || continue
        kver=${k#/boot/vmlinuz-}
        break
    done
    [ -n "$kver" ] || skip "no /boot/vmlinuz-*-cloud-amd64 (package linux-image-cloud-amd64)"
fi
moddir=${MODDIR:-/lib/modules/$kver}
[ -f "$moddir/modules.dep" ] || skip "no $moddir/modules.dep (package linux-image-cloud-amd64)"
busybox=/bin/busybox
[ -x "$busybox" ] || skip "no $busybox (package busybox-static)"
# busybox-static: a static binary (the busybox package's is dynamic)
if ldd "$busybox" >/dev/null 2>&1; then
    skip "$busybox is not static (package busybox-static)"
fi
qga=/usr/sbin/qemu-ga
[ -x "$qga" ] || skip "no $qga (package qemu-guest-agent)"
command -v cpio >/dev/null || skip "no cpio (package cpio)"
command -v gzip >/dev/null || skip "no gzip (package gzip)"
[ -f "$here/guest-init" ] || die "no $here/guest-init"

root=$(mktemp -d "${TMPDIR:-/tmp}/vma-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,mnt,modules,usr/sbin,etc,var}
ln -s ../run "$root/var/run"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
cp "$here/guest-init" "$root/init"
chmod 755 "$root/init"

# qemu-ga, its libraries and the loader, at the paths they have here
# (/lib and /lib64 may be symlinks into /usr: resolve the directories).
cp "$qga" "$root/usr/sbin/qemu-ga"
libs=$(ldd "$qga" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }')
[ -n "$libs" ] || die "ldd $qga listed no libraries"
for lib in $libs; do
    [ -e "$lib" ] || die "ldd lists $lib, which does not exist"
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# The loader's own path (the ELF interpreter of qemu-ga) must exist.
interp=$(ldd "$qga" | awk '/ld-linux/ { print ($3 ~ /^\//) ? $3 : $1; exit }')
[ -n "$interp" ] && [ -e "$root$interp" ] || die "no dynamic loader found for $qga"

# Modules: the wanted ones and their dependencies from modules.dep,
# dependencies first, each once.
declare -A seen=()
order=()
dep_line() { # module name -> "path: deps" line of modules.dep
    awk -v m="$1" -F: '{
        n = $1; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n)
        gsub(/-/, "_", n)
        if (n == m) { print; exit }
    }' "$moddir/modules.dep"
}
add_module() { # path relative to moddir
    local path=$1 line deps d
    [ -z "${seen[$path]:-}" ] || return 0
    seen[$path]=1
    line=$(grep -m1 "^$path:" "$moddir/modules.dep") || die "$path not in modules.dep"
    deps=${line#*:}
    # modules.dep lists the dependencies of a dependency too; their order
    # there is "needed by what comes before": load them from last to first.
    local rev=()
    for d in $deps; do rev=("$d" "${rev[@]}"); done
    for d in "${rev[@]}"; do add_module "$d"; done
    order+=("$path")
}
for m in virtio_pci virtio_blk virtio_console; do
    if grep -qw "CONFIG_$(echo "$m" | tr a-z A-Z)=y" "/boot/config-$kver" 2>/dev/null; then
        continue # built in
    fi
    line=$(dep_line "$m")
    [ -n "$line" ] || skip "module $m not found in $moddir/modules.dep"
    add_module "${line%%:*}"
done
i=0
: >"$root/modules/order"
for path in "${order[@]}"; do
    i=$((i + 1))
    name=$(basename "$path")
    dst=$(printf '%02d-%s' "$i" "${name%%.ko*}.ko")
    case $name in
        *.ko) cp "$moddir/$path" "$root/modules/$dst" ;;
        # busybox's insmod loads only uncompressed modules
        *.ko.xz) if command -v xz >/dev/null; then xz -dc "$moddir/$path"
                 else "$busybox" xzcat "$moddir/$path"; fi >"$root/modules/$dst" ;;
        *.ko.zst) command -v zstd >/dev/null || skip "$path: no zstd to decompress it (package zstd)"
                  zstd -qdc "$moddir/$path" >"$root/modules/$dst" ;;
        *.ko.gz) gzip -dc "$moddir/$path" >"$root/modules/$dst" ;;
        *) die "unknown module file $path" ;;
    esac
    echo "$dst" >>"$root/modules/order"
done

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) |
    gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
echo "mkinitramfs: $out for $kver ($(wc -c <"$out") bytes; modules: $(tr '\n' ' ' <"$root/modules/order"))"
