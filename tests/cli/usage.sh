#!/bin/bash
# Usage errors exit 1 with the usage text on stderr; `vma -h`/`--help`
# exits 0 with it on stdout; `vma <command> --help` and `vma help
# <command>` print that command's usage only (stdout, exit 0).
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

A=$G/basic.vma
differ() { ! cmp -s "$1" "$2"; }

case_ "vma -h"
run "$VMA" -h
expect_ok
check "usage text starts with 'usage:'" grep -q '^usage:' "$T/out"
cp "$T/out" "$T/usage.txt"

case_ "vma --help"
run "$VMA" --help
expect_ok
expect_out_file "$T/usage.txt"

for cmd in list config create extract verify checksum mount; do
    case_ "vma help $cmd"
    run "$VMA" help "$cmd"
    expect_ok
    check "$cmd usage starts with 'usage: vma $cmd '" grep -q "^usage: vma $cmd " "$T/out"
    check "$cmd usage names no other command" \
        bash -c '! grep -E "vma (list|config|create|extract|verify|checksum|mount) " "$1" | grep -qv "vma $2 "' _ "$T/out" "$cmd"
    check "$cmd usage is not the whole list" differ "$T/out" "$T/usage.txt"
    cp "$T/out" "$T/usage-$cmd.txt"
    for h in -h --help; do
        case_ "vma $cmd $h"
        run "$VMA" "$cmd" "$h"
        expect_ok
        expect_out_file "$T/usage-$cmd.txt"
    done
done
check "the whole list names checksum" grep -q '^vma checksum ' "$T/usage.txt"

# What each command's usage names (its options).
for want in "list:--output-format=" "verify:--output-format=" "verify:--progress" \
    "checksum:-d <dev" "checksum:--output-format=" "create:--uuid=" "create:--ctime=" \
    "create:SOURCE_DATE_EPOCH" "create:--compress=" "create:--no-progress" \
    "extract:-r <fifo>" "extract:-p, --progress" "config:-c <config>"; do
    check "vma ${want%%:*} --help names '${want#*:}'" grep -qF -- "${want#*:}" "$T/usage-${want%%:*}.txt"
done

case_ "vma help"
run "$VMA" help
expect_ok
expect_out_file "$T/usage.txt"

case_ "vma help <unknown command>"
run "$VMA" help bogus
expect_usage

case_ "vma verify -h with an archive"
run "$VMA" verify -h "$A"
expect_ok
expect_out_file "$T/usage-verify.txt"

case_ "vma extract --help with arguments"
run "$VMA" extract "$A" --help "$T/never"
expect_ok
expect_out_file "$T/usage-extract.txt"
check "nothing extracted" [ ! -e "$T/never" ]

# Each line: the arguments of one usage error (word-split).
while read -r args; do
    case_ "vma $args"
    # shellcheck disable=SC2086
    run "$VMA" $args
    expect_usage
done <<EOF

bogus
LIST $A
list
list $A $A
list -x $A
config
config $A $A
config $A -c
config -q $A
verify
verify $A $A
verify -x $A
extract
extract $A
extract $A $T/u1 $T/u2
extract -r
extract -d
extract -z $A $T/u3
create
create -x $T/u4.vma
create $T/u5.vma -c
create $T/u6.vma -d
help list verify
checksum
checksum $A $A
checksum -x $A
checksum $A -d
list --output-format=yaml $A
extract --output-format=json $A $T/u7
create --output-format=json $T/u8.vma $A
list --uuid=x $A
EOF

check "no directory made by a usage error" [ ! -e "$T/u1" -a ! -e "$T/u2" -a ! -e "$T/u3" ]
check "no archive made by a usage error" [ ! -e "$T/u4.vma" -a ! -e "$T/u5.vma" -a ! -e "$T/u6.vma" -a ! -e "$T/u8.vma" ]
check "no directory made by a usage error" [ ! -e "$T/u7" ]

done_
