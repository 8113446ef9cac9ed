#!/bin/bash
# Usage errors exit 1 with the usage text on stderr; -h/--help exits 0 with
# it on stdout.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"

A=$G/basic.vma

case_ "vma -h"
run "$VMA" -h
expect_ok
check "usage text starts with 'usage:'" grep -q '^usage:' "$T/out"
cp "$T/out" "$T/usage.txt"

case_ "vma --help"
run "$VMA" --help
expect_ok
expect_out_file "$T/usage.txt"

for cmd in list config create extract verify; do
    for h in -h --help; do
        case_ "vma $cmd $h"
        run "$VMA" "$cmd" "$h"
        expect_ok
        expect_out_file "$T/usage.txt"
    done
done

case_ "vma verify -h with an archive"
run "$VMA" verify -h "$A"
expect_ok
expect_out_file "$T/usage.txt"

case_ "vma extract --help with arguments"
run "$VMA" extract "$A" --help "$T/never"
expect_ok
expect_out_file "$T/usage.txt"
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
EOF

check "no directory made by a usage error" [ ! -e "$T/u1" -a ! -e "$T/u2" -a ! -e "$T/u3" ]
check "no archive made by a usage error" [ ! -e "$T/u4.vma" -a ! -e "$T/u5.vma" -a ! -e "$T/u6.vma" ]

done_
