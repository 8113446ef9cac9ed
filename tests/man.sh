#!/usr/bin/env bash
# The man pages render without a warning (`man --warnings`, 80 columns),
# vma(1) names every command and option of the command, and
# libvmarchive(3) names every function the library exports (from
# lib/vmarchive.map), so a new public function is documented there too.
#
# Usage: man.sh <vma.1> <libvmarchive.3> <vmarchive.map>
# SPDX-License-Identifier: MIT
set -u
[ $# = 3 ] || { echo "usage: $0 <vma.1> <libvmarchive.3> <map>" >&2; exit 99; }
page1=$1 page3=$2 map=$3
command -v man >/dev/null || { echo "man (man-db) is missing: scripts/deps.sh" >&2; exit 99; }
T=$(mktemp -d "${TMPDIR:-/tmp}/vma-man.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

for page in "$page1" "$page3"; do
    MANWIDTH=80 man --warnings -l "$page" >"$T/out" 2>"$T/err"
    rc=$?
    [ $rc = 0 ] || fail "man -l $page: exit status $rc"
    if [ -s "$T/err" ]; then
        fail "man --warnings -l $page:"
        sed 's/^/    /' "$T/err" >&2
    fi
    [ "$(wc -l <"$T/out")" -gt 50 ] || fail "$page renders to almost nothing"
    cp "$T/out" "$T/$(basename "$page").txt"
done

# The rendered text (hyphenation off: MANWIDTH is wide enough that an
# option name is never split, but words may be, so match whole lines).
MANWIDTH=400 man -l "$page1" 2>/dev/null >"$T/vma1.txt"
for word in 'vma list' 'vma config' 'vma verify' 'vma extract' 'vma create' \
    ' -v ' ' -c ' ' -d ' ' -r ' '--compress=' 'zstd' 'gzip' 'lzo' \
    '-h, --help' '-V, --version' 'RESTORE MAP' 'throttling.bps=' \
    'throttling.group=' 'cache=' 'skip=' 'format=qcow2' 'rbd:' 'iscsi://' \
    'nbd://' 'EXIT STATUS' 'EXAMPLES' 'exec:' 'vma checksum' 'vma help' \
    '--output-format=' '-p, --progress' '--no-progress' '--uuid=' '--ctime=' \
    'SOURCE_DATE_EPOCH' 'JSON OUTPUT' 'PROGRESS BAR' 'vma backup' '--qmp' \
    '--qga' '--fleecing-dir' '--cleanup'; do
    grep -qF -- "$word" "$T/vma1.txt" || fail "vma(1) does not mention '$word'"
done

MANWIDTH=400 man -l "$page3" 2>/dev/null >"$T/lib3.txt"
sed -n '/^global:/,/^local:/p' "$map" | grep -oE 'vma_[a-z0-9_]+' >"$T/functions"
[ -s "$T/functions" ] || fail "no functions found in $map"
while read -r f; do
    grep -qE "\\b$f\\(" "$T/lib3.txt" ||
        fail "libvmarchive(3) does not mention $f() (exported by $map)"
done <"$T/functions"

[ $fails = 0 ] || exit 1
echo "man.sh: both pages render without warnings; $(wc -l <"$T/functions") functions documented"
