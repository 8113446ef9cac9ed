#!/usr/bin/env bash
# Build the Debian packages and try them as installed, without installing
# them on this machine:
#   1. install what the build needs (dpkg-dev, debhelper, lintian and the
#      Build-Depends of debian/control) when root; otherwise list it and fail,
#   2. copy the tree (tracked and new files, not build*/) into a temporary
#      directory and run `dpkg-buildpackage -us -uc` there (source and
#      binary packages),
#   3. lintian --pedantic --display-info on the .changes: any tag fails
#      (debian/source/lintian-overrides holds the reasoned exceptions),
#   4. `dpkg -x` every .deb into one clean directory, then
#      - the installed `vmarchive list tests/golden/basic.vma` (TZ=UTC)
#        prints exactly tests/golden/basic.list, and --version works,
#      - a small program compiled with `pkg-config --cflags --libs
#        vmarchive` against the installed header and library runs,
#      - the programs of examples/, compiled the same way, pass
#        tests/cli/examples.sh with the installed command,
#      - the autopkgtest's script (debian/tests/cli) passes with the
#        unpacked command,
#      - no package but vmarchive-pve ships /usr/bin/vma (pve-qemu-kvm's
#        file), the completion and man page name only vmarchive,
#   5. dpkg --root into a scratch root: a stand-in pve-qemu-kvm that ships
#      /usr/bin/vma, then vmarchive-pve (its diversion makes /usr/bin/vma
#      ours), an upgrade of the stand-in (the diversion holds), and removal
#      of vmarchive-pve (the original comes back).
# Nothing is written inside the repository. Exits non-zero on any failure.
# Usage: scripts/debian-check.sh   (VMA_KEEP_DEB_DIR=1 keeps the temp dir)
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

need=(dpkg-dev debhelper lintian pkg-config gcc)
missing=()
for p in "${need[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] ||
        missing+=("$p")
done
install_pkgs() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "debian-check.sh: missing packages: $*" >&2
        echo "debian-check.sh: install them with: sudo apt-get install $*" >&2
        exit 1
    fi
    echo "debian-check.sh: installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}
[ ${#missing[@]} -eq 0 ] || install_pkgs "${missing[@]}"
# The Build-Depends that are not installed, as dpkg-checkbuilddeps lists
# them ("Unmet build dependencies: meson (>= 1) foo | bar ..."): the first
# alternative of each, without version or profile restrictions.
unmet=$(dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p' |
    sed -E 's/\([^)]*\)//g; s/<[^>]*>//g; s/\[[^]]*\]//g; s/\|[^ ]*//g')
if [ -n "$unmet" ]; then
    # shellcheck disable=SC2086
    install_pkgs $unmet
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vma-debian.XXXXXX")
if [ -z "${VMA_KEEP_DEB_DIR:-}" ]; then
    trap 'rm -rf "$T"' EXIT
else
    echo "debian-check.sh: keeping $T"
fi
version=$(dpkg-parsechangelog -S Version)
src=$T/vmarchive-$version
mkdir "$src"
# Tracked files and new ones not ignored by .gitignore (so a change not yet
# committed is built too); never build*/ or other ignored files.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf - | tar -xf - -C "$src"
else
    tar --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$src"
fi

echo "== dpkg-buildpackage -us -uc (source and binary packages)"
(cd "$src" && dpkg-buildpackage -us -uc) >"$T/build.log" 2>&1 || {
    tail -n 60 "$T/build.log" >&2
    echo "debian-check.sh: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
changes=$T/vmarchive_${version}_${arch}.changes
debs=("$T"/*.deb)
echo "built: $(cd "$T" && ls ./*.deb | sed 's|^\./||' | tr '\n' ' ')"
for p in libvmarchive0 libvmarchive-dev vmarchive; do
    [ -f "$T/${p}_${version}_${arch}.deb" ] || { echo "debian-check.sh: no $p package" >&2; exit 1; }
done
pve_deb=$T/vmarchive-pve_${version}_all.deb
[ -f "$pve_deb" ] || { echo "debian-check.sh: no vmarchive-pve package" >&2; exit 1; }

echo "== lintian --pedantic (source and binary packages)"
lintian_rc=0
lintian --pedantic --display-info --fail-on error,warning,info,pedantic "$changes" \
    >"$T/lintian.txt" 2>&1 || lintian_rc=$?
grep -v '^running with root privileges' "$T/lintian.txt" || true
if [ $lintian_rc -ne 0 ] || grep -qE '^[EWIP]: ' "$T/lintian.txt"; then
    echo "debian-check.sh: lintian reports tags (source overrides: debian/source/lintian-overrides)" >&2
    exit 1
fi
echo "lintian --pedantic: no tags"

echo "== dpkg -x into a clean directory"
root=$T/root
mkdir "$root"
for d in "${debs[@]}"; do
    [ "$d" = "$pve_deb" ] && continue # its links are tried by dpkg below
    dpkg -x "$d" "$root"
    if dpkg -c "$d" | grep -qE ' \./usr/bin/vma( |$)'; then
        echo "debian-check.sh: $(basename "$d") ships /usr/bin/vma (pve-qemu-kvm's)" >&2
        exit 1
    fi
done
libdir=$root/usr/lib/$multiarch
for f in usr/bin/vmarchive usr/include/vmarchive/vma.h \
    "usr/lib/$multiarch/libvmarchive.so.0" "usr/lib/$multiarch/pkgconfig/vmarchive.pc" \
    usr/share/man/man1/vmarchive.1.gz usr/share/man/man3/libvmarchive.3.gz \
    usr/share/bash-completion/completions/vmarchive; do
    [ -e "$root/$f" ] || { echo "debian-check.sh: /$f is not in any package" >&2; exit 1; }
done
# The completion and the man page of vmarchive claim only vmarchive.
# shellcheck disable=SC2016
bash -c '. "$1" && complete -p vmarchive >/dev/null && ! complete -p vma 2>/dev/null' sh \
    "$root/usr/share/bash-completion/completions/vmarchive" ||
    { echo "debian-check.sh: the vmarchive completion does not claim vmarchive alone" >&2; exit 1; }
zcat "$root/usr/share/man/man1/vmarchive.1.gz" | grep -A1 '^\.SH NAME' | tail -n 1 | grep -q '^vmarchive \\-' ||
    { echo "debian-check.sh: vmarchive(1) names another command" >&2; exit 1; }

export TZ=UTC LC_ALL=C
echo "== installed vmarchive on tests/golden/basic.vma"
# The installed command must load the installed library, not one of ours.
LD_LIBRARY_PATH=$libdir ldd "$root/usr/bin/vmarchive" >"$T/ldd.txt"
grep -q "libvmarchive.so.0 => $libdir/" "$T/ldd.txt" || {
    cat "$T/ldd.txt" >&2
    echo "debian-check.sh: vmarchive does not load the packaged libvmarchive.so.0" >&2
    exit 1
}
LD_LIBRARY_PATH=$libdir "$root/usr/bin/vmarchive" list "$repo/tests/golden/basic.vma" >"$T/list.out"
cmp "$T/list.out" "$repo/tests/golden/basic.list" || {
    diff -u "$repo/tests/golden/basic.list" "$T/list.out" >&2 || true
    echo "debian-check.sh: vmarchive list differs from tests/golden/basic.list" >&2
    exit 1
}
LD_LIBRARY_PATH=$libdir "$root/usr/bin/vmarchive" --version >"$T/version.out"
[ "$(cat "$T/version.out")" = "vmarchive (libvma) $version" ] || {
    echo "debian-check.sh: --version printed '$(cat "$T/version.out")'" >&2
    exit 1
}
LD_LIBRARY_PATH=$libdir "$root/usr/bin/vmarchive" verify "$repo/tests/golden/basic.vma.zst"
echo "list output matches basic.list; $(cat "$T/version.out"); verify of basic.vma.zst OK"

echo "== a program built with pkg-config against the installed header and library"
cat >"$T/prog.c" <<'C'
/* Lists the devices of an archive and verifies it through libvmarchive. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <vma.h>

int main(int argc, char **argv)
{
    vma_reader *r = vma_reader_new();
    uint64_t clusters = 0;
    unsigned id;
    int rc;

    if (argc != 2 || r == NULL)
        return 2;
    if (strcmp(vma_version(), VMA_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", VMA_VERSION_STRING, vma_version());
        return 1;
    }
    rc = vma_reader_open_path(r, argv[1]);
    if (rc == VMA_OK)
        for (id = vma_reader_next_device(r, 0); id != 0; id = vma_reader_next_device(r, id))
            printf("%u %s %" PRIu64 "\n", id, vma_reader_device_name(r, id),
                   vma_reader_device_size(r, id));
    if (rc == VMA_OK)
        rc = vma_reader_read(r, NULL, NULL);
    if (rc != VMA_OK) {
        fprintf(stderr, "%s: %s\n", vma_status_name(rc), vma_reader_error(r));
        vma_reader_free(r);
        return 1;
    }
    vma_reader_counters(r, &clusters, NULL, NULL);
    printf("verified %" PRIu64 " clusters with libvmarchive %s\n", clusters, vma_version());
    vma_reader_free(r);
    return 0;
}
C
pc() {
    PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --define-variable=prefix="$root/usr" "$@"
}
pc --exists vmarchive || { echo "debian-check.sh: pkg-config does not find vmarchive" >&2; exit 1; }
[ "$(pc --modversion vmarchive)" = "$version" ] || {
    echo "debian-check.sh: vmarchive.pc says version $(pc --modversion vmarchive)" >&2
    exit 1
}
# shellcheck disable=SC2046
gcc -std=c11 -Wall -Wextra -Werror -o "$T/prog" "$T/prog.c" $(pc --cflags --libs vmarchive)
LD_LIBRARY_PATH=$libdir "$T/prog" "$repo/tests/golden/basic.vma" >"$T/prog.out"
cat "$T/prog.out"
printf '1 drive-scsi0 8388608\n2 drive-efidisk0 540672\nverified 137 clusters with libvmarchive %s\n' \
    "$version" >"$T/prog.want"
cmp -s "$T/prog.out" "$T/prog.want" || {
    diff -u "$T/prog.want" "$T/prog.out" >&2 || true
    echo "debian-check.sh: the pkg-config program printed something else" >&2
    exit 1
}
echo "== examples/ built with pkg-config against the installed library, then run"
mkdir "$T/examples"
for x in list create_threads hash_devices restore_progress; do
    extra=-pthread
    [ $x = hash_devices ] && extra=$(pkg-config --cflags --libs libcrypto)
    # shellcheck disable=SC2046,SC2086
    gcc -std=c11 -Wall -Wextra -Werror -o "$T/examples/$x" "$repo/examples/$x.c" \
        $(pc --cflags --libs vmarchive) $extra
done
# examples.sh wants vma_craft and the preload shim only as placeholders.
LD_LIBRARY_PATH=$libdir bash "$repo/tests/cli/examples.sh" "$root/usr/bin/vmarchive" \
    "$repo/tests/golden" /bin/false /dev/null "$T/examples"
echo "== the autopkgtest (debian/tests/cli) against the unpacked vmarchive"
(cd "$repo" && VMARCHIVE=$root/usr/bin/vmarchive LD_LIBRARY_PATH=$libdir sh debian/tests/cli) \
    >"$T/autopkgtest.log" 2>&1 || {
    tail -n 30 "$T/autopkgtest.log" >&2
    echo "debian-check.sh: debian/tests/cli failed" >&2
    exit 1
}
grep -E '^[a-z]+\.sh: [0-9]+ checks' "$T/autopkgtest.log"

echo "== vmarchive-pve: dpkg-divert of /usr/bin/vma, with dpkg --root"
R=$T/dpkgroot
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers"
: >"$R/var/lib/dpkg/status"
: >"$R/var/lib/dpkg/available"
# A stand-in for pve-qemu-kvm <version>: its /usr/bin/vma says its version.
stand_in() {
    local d=$T/stand-in-$1
    mkdir -p "$d/DEBIAN" "$d/usr/bin"
    printf '%s\n' "Package: pve-qemu-kvm" "Version: $1" "Architecture: all" \
        "Maintainer: test <test@example.org>" \
        "Description: stand-in for Proxmox VE's QEMU, which ships /usr/bin/vma" >"$d/DEBIAN/control"
    printf '#!/bin/sh\necho "proxmox vma %s"\n' "$1" >"$d/usr/bin/vma"
    chmod 755 "$d/usr/bin/vma"
    dpkg-deb --root-owner-group -b "$d" "$T/pve-qemu-kvm_$1_all.deb" >/dev/null
}
# Maintainer scripts run outside a chroot, with DPKG_ROOT=$R (dpkg-divert
# honours it); the root holds no libc, hence --force-depends.
dp() {
    dpkg --root="$R" --force-script-chrootless --force-depends --log=/dev/null "$@" \
        >>"$T/dpkg.log" 2>&1 || { cat "$T/dpkg.log" >&2; echo "debian-check.sh: dpkg $*: failed" >&2; exit 1; }
}
pve_fail() {
    echo "debian-check.sh: vmarchive-pve: $*" >&2
    ls -l "$R/usr/bin" >&2
    dpkg-divert --root "$R" --list >&2
    exit 1
}
run_vma() { LD_LIBRARY_PATH=$R/usr/lib/$multiarch "$R/usr/bin/vma" "$@"; }
stand_in 8.1.5-1
stand_in 8.1.5-2
dp -i "$T/pve-qemu-kvm_8.1.5-1_all.deb"
[ "$(run_vma)" = "proxmox vma 8.1.5-1" ] || pve_fail "the stand-in's vma does not run"
dp -i "$T/libvmarchive0_${version}_${arch}.deb" "$T/vmarchive_${version}_${arch}.deb" "$pve_deb"
[ "$(readlink "$R/usr/bin/vma")" = vmarchive ] || pve_fail "/usr/bin/vma is not a link to vmarchive"
[ "$(run_vma --version)" = "vma (libvma) $version" ] || pve_fail "vma --version: $(run_vma --version 2>&1)"
[ "$("$R/usr/bin/vma.distrib")" = "proxmox vma 8.1.5-1" ] || pve_fail "the original is not at /usr/bin/vma.distrib"
dpkg-divert --root "$R" --list | grep -qx 'diversion of /usr/bin/vma to /usr/bin/vma.distrib by vmarchive-pve' ||
    pve_fail "no diversion listed"
run_vma list "$repo/tests/golden/basic.vma" | cmp -s - "$repo/tests/golden/basic.list" ||
    pve_fail "vma list through the link differs from basic.list"
[ "$(readlink "$R/usr/share/man/man1/vma.1.gz")" = vmarchive.1.gz ] || pve_fail "no vma(1) link"
grep -qx 'complete -F _vma -o filenames vma' "$R/usr/share/bash-completion/completions/vma" ||
    pve_fail "no completion for vma"
dp -i "$T/pve-qemu-kvm_8.1.5-2_all.deb"
[ "$(readlink "$R/usr/bin/vma")" = vmarchive ] || pve_fail "an upgrade of pve-qemu-kvm took /usr/bin/vma back"
[ "$("$R/usr/bin/vma.distrib")" = "proxmox vma 8.1.5-2" ] || pve_fail "the upgrade's vma is not at vma.distrib"
dp --remove vmarchive-pve
[ "$(run_vma)" = "proxmox vma 8.1.5-2" ] || pve_fail "removal did not put the original back"
[ ! -e "$R/usr/bin/vma.distrib" ] || pve_fail "vma.distrib is left after removal"
[ -z "$(dpkg-divert --root "$R" --list)" ] || pve_fail "a diversion is left after removal"
[ -x "$R/usr/bin/vmarchive" ] || pve_fail "removal took vmarchive too"
echo "vmarchive-pve: diverted on install, kept over an upgrade of pve-qemu-kvm, undone on removal"

echo "debian-check.sh: OK"
