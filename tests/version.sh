#!/usr/bin/env bash
# `vma --version` and `vma -V`: one line "vma (libvma) <version>" on stdout,
# exit 0, nothing on stderr; the version is meson's project version. Run
# through a link named vmarchive (as Debian installs it), the version and
# usage lines name vmarchive; error messages keep "vma: ".
#
# Usage: version.sh <vma> <meson-project-version>
# SPDX-License-Identifier: MIT
set -u
[ $# = 2 ] || { echo "usage: $0 <vma> <version>" >&2; exit 99; }
vma=$1 version=$2
name=$(basename "$vma") # vma, or vmarchive as Debian builds it
T=$(mktemp -d "${TMPDIR:-/tmp}/vma-version.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
fails=0
for opt in --version -V; do
    "$vma" "$opt" >"$T/out" 2>"$T/err"
    rc=$?
    [ $rc = 0 ] || { echo "FAIL: vma $opt: exit status $rc" >&2; fails=$((fails + 1)); }
    [ ! -s "$T/err" ] || { echo "FAIL: vma $opt wrote on stderr" >&2; fails=$((fails + 1)); }
    printf '%s (libvma) %s\n' "$name" "$version" >"$T/want"
    cmp -s "$T/out" "$T/want" || {
        echo "FAIL: vma $opt printed '$(head -c 200 "$T/out")', expected '$(cat "$T/want")'" >&2
        fails=$((fails + 1))
    }
done
# Not an option of the commands: `vma list --version` is a usage error.
"$vma" list --version >/dev/null 2>&1
rc=$?
[ $rc = 1 ] || { echo "FAIL: vma list --version: exit status $rc, expected 1" >&2; fails=$((fails + 1)); }
# The name as invoked, through a link (vmarchive-pve's /usr/bin/vma is one).
ln -s "$(realpath "$vma")" "$T/vmarchive"
"$T/vmarchive" --version >"$T/out" 2>&1
printf 'vmarchive (libvma) %s\n' "$version" >"$T/want"
cmp -s "$T/out" "$T/want" || { echo "FAIL: vmarchive --version printed '$(head -c 200 "$T/out")'" >&2; fails=$((fails + 1)); }
"$T/vmarchive" >"$T/out" 2>&1
{ head -n 1 "$T/out" | grep -qx 'usage: vmarchive command \[command options\]' &&
    grep -qx 'vmarchive extract <filename> .*' "$T/out" && ! grep -q '^vma ' "$T/out"; } ||
    { echo "FAIL: vmarchive's usage names another command:" >&2; cat "$T/out" >&2; fails=$((fails + 1)); }
"$T/vmarchive" help extract >"$T/out" 2>&1
{ grep -q '^usage: vmarchive extract ' "$T/out" && grep -q '^       vmarchive extract ' "$T/out"; } ||
    { echo "FAIL: vmarchive help extract:" >&2; cat "$T/out" >&2; fails=$((fails + 1)); }
"$T/vmarchive" list /nonexistent >/dev/null 2>"$T/err"
grep -q '^vma: ' "$T/err" || { echo "FAIL: error prefix changed: $(cat "$T/err")" >&2; fails=$((fails + 1)); }
[ $fails = 0 ] || exit 1
echo "version.sh: $name --version and -V print '$name (libvma) $version'"
