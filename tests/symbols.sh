#!/usr/bin/env bash
# The shared library exports exactly the public API: the functions that
# include/vma.h declares with VMA_API, the names lib/vmarchive.map lists,
# and the dynamic symbols `nm -D --defined-only` finds in the built
# library are one and the same set, all under a VMARCHIVE_* version node.
# A function added to the header without VMA_API, or without a line in the
# map, or an internal function that leaks out, fails this test.
#
# Usage: symbols.sh <libvmarchive.so> <vma.h> <vmarchive.map>
# SPDX-License-Identifier: MIT
set -euo pipefail
[ $# = 3 ] || { echo "usage: $0 <lib.so> <vma.h> <map>" >&2; exit 99; }
lib=$1 header=$2 map=$3
command -v nm >/dev/null || { echo "nm (binutils) is missing" >&2; exit 99; }
T=$(mktemp -d "${TMPDIR:-/tmp}/vma-symbols.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# Function declarations of the header: a line at column 0 that names a
# vma_ function followed by "(" (continuation lines are indented).
grep -E '^[A-Za-z].*\bvma_[a-z0-9_]+\(' "$header" | grep -v '^typedef' \
    >"$T/decls" || true
grep -v '^VMA_API ' "$T/decls" >"$T/bare" || true
if [ -s "$T/bare" ]; then
    fail "declarations in $header without VMA_API:"
    sed 's/^/    /' "$T/bare" >&2
fi
sed -E 's/\(.*//; s/.*[ *]//' "$T/decls" | sort >"$T/header"

# The map's global names: "    name;" lines between "global:" and "local:".
sed -n '/^global:/,/^local:/p' "$map" | grep -oE '^\s+vma_[a-z0-9_]+;' |
    tr -d ' \t;' | sort >"$T/map"

# What the library exports, and under which version node.
nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' >"$T/nm-raw"
grep -v '@@\?VMARCHIVE_' "$T/nm-raw" >"$T/unversioned" || true
if [ -s "$T/unversioned" ]; then
    fail "exported without a VMARCHIVE_ version node:"
    sed 's/^/    /' "$T/unversioned" >&2
fi
sed 's/@.*//' "$T/nm-raw" | sort >"$T/exported"

n=$(wc -l <"$T/header")
[ "$n" -ge 40 ] || fail "only $n declarations found in $header (parser broken?)"
diff -u --label "$header (VMA_API)" --label "$map" "$T/header" "$T/map" >&2 ||
    fail "header and map differ (lines: - only in the header, + only in the map)"
diff -u --label "$map" --label "nm -D $lib" "$T/map" "$T/exported" >&2 ||
    fail "map and exported symbols differ (+ only exported, - missing)"

if [ $fails -ne 0 ]; then
    echo "symbols.sh: $fails failure(s); see README, \"Adding a public function\"" >&2
    exit 1
fi
echo "symbols.sh: $n functions: header, map and nm -D agree"
