#!/usr/bin/env bash
# `vma --version` and `vma -V`: one line "vma (libvma) <version>" on stdout,
# exit 0, nothing on stderr; the version is meson's project version.
#
# Usage: version.sh <vma> <meson-project-version>
# SPDX-License-Identifier: MIT
set -u
[ $# = 2 ] || { echo "usage: $0 <vma> <version>" >&2; exit 99; }
vma=$1 version=$2
T=$(mktemp -d "${TMPDIR:-/tmp}/vma-version.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
fails=0
for opt in --version -V; do
    "$vma" "$opt" >"$T/out" 2>"$T/err"
    rc=$?
    [ $rc = 0 ] || { echo "FAIL: vma $opt: exit status $rc" >&2; fails=$((fails + 1)); }
    [ ! -s "$T/err" ] || { echo "FAIL: vma $opt wrote on stderr" >&2; fails=$((fails + 1)); }
    printf 'vma (libvma) %s\n' "$version" >"$T/want"
    cmp -s "$T/out" "$T/want" || {
        echo "FAIL: vma $opt printed '$(head -c 200 "$T/out")', expected '$(cat "$T/want")'" >&2
        fails=$((fails + 1))
    }
done
# Not an option of the commands: `vma list --version` is a usage error.
"$vma" list --version >/dev/null 2>&1
rc=$?
[ $rc = 1 ] || { echo "FAIL: vma list --version: exit status $rc, expected 1" >&2; fails=$((fails + 1)); }
[ $fails = 0 ] || exit 1
echo "version.sh: vma --version and -V print 'vma (libvma) $version'"
