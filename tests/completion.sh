#!/usr/bin/env bash
# Bash completion (completions/vma.bash): sources it and checks COMPREPLY
# for commands, options, --compress codecs, create -d formats, file names,
# and the device names `vma list` gives for `extract -d`.
#
# Usage: completion.sh <completions/vma.bash> <vma> <golden-dir>
# SPDX-License-Identifier: MIT
set -u
[ $# = 3 ] || { echo "usage: $0 <vma.bash> <vma> <golden-dir>" >&2; exit 99; }
comp=$(realpath "$1") vma=$(realpath "$2") golden=$(realpath "$3")
T=$(mktemp -d "${TMPDIR:-/tmp}/vma-completion.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
fails=0 checks=0

# shellcheck source=/dev/null
source "$comp" || { echo "FAIL: sourcing $comp" >&2; exit 1; }
# The file claims the name it is installed as, and no other (a `vmarchive`
# file must not take Proxmox's `vma`).
name=$(basename "$comp")
complete -p "$name" | grep -q -- '-F _vma' || { echo "FAIL: $name has no completion" >&2; exit 1; }
for other in vma vmarchive; do
    [ "$other" = "$name" ] || ! complete -p "$other" >/dev/null 2>&1 ||
        { echo "FAIL: the $name completion also claims $other" >&2; exit 1; }
done

cp "$golden/basic.vma" "$T/basic.vma"
: >"$T/notes.txt"
mkdir "$T/restore-dir"
cd "$T" || exit 99

# expect LINE WANT...: completing at the end of LINE gives exactly the
# words WANT (in any order).
expect() {
    local line=$1 got want
    shift
    COMP_LINE=$line COMP_POINT=${#line} COMPREPLY=()
    _vma "$vma"
    got=$(printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort)
    want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
    checks=$((checks + 1))
    if [ "$got" != "$want" ]; then
        fails=$((fails + 1))
        echo "FAIL: '$line': got [$(echo $got)], expected [$(echo $want)]" >&2
    fi
}

expect "vma " list config create extract verify checksum mount backup help --help --version
expect "vma ex" extract
expect "vma c" config create checksum
expect "vma extract -" -v -d -r -p --progress --no-progress --output-format= --format= --salvage --force-header --help
expect "vma extract --format=q" qcow2
expect "vma checksum -" -d -p --progress --no-progress --output-format= --help
expect "vma list --out" --output-format=
expect "vma verify basic.vma --output-format=" text json
expect "vma create x.vma --u" --uuid=
expect "vma create x.vma --ct" --ctime=
expect "vma help ch" checksum
expect "vma backup --q" --qmp --qga --qmp-timeout=
expect "vma backup --qmp vm.qmp --fleecing-dir rest" restore-dir
expect "vma backup --qmp vm.qmp --clean" --cleanup
expect "vma help verify " # one command only
expect "vma checksum basic.vma -d drive-e" drive-efidisk0
expect "vma create x.vma --comp" --compress=
# bash completes after the last '=' or ':' of a word (COMP_WORDBREAKS).
expect "vma create x.vma --compress=zs" zstd zstd:1 zstd:3 zstd:19
expect "vma create x.vma --compress=zstd:1" 1 19
expect "vma create x.vma -d format=q" qcow2: qed:
expect "vma create x.vma -d format=raw:disk0=not" notes.txt
# Device names from `vma list` of the archive on the line.
expect "vma extract basic.vma -d " drive-scsi0 drive-efidisk0
expect "vma extract -v basic.vma -d drive-s" drive-scsi0
expect "vma extract basic.vma -d drive-scsi0,drive-e" drive-scsi0,drive-efidisk0
expect "vma extract -d " # no archive on the line yet: nothing
expect "vma extract missing.vma -d " # unreadable archive: nothing, no error
expect "vma config basic.vma -c qemu-server.f" qemu-server.fw
# Archives for the first argument, directories for extract's target.
expect "vma verify ba" basic.vma
expect "vma mount -o " allow_other
expect "vma mount -" -f -o -c -r -n --index= --salvage --force-header --help
expect "vma extract basic.vma rest" restore-dir

[ $fails = 0 ] || exit 1
echo "completion.sh: $checks cases"
