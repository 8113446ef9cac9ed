#!/bin/bash
# The progress bar: drawn on stderr when it is a terminal (run under a
# pty with script(1)) and with -p/--progress; absent with --no-progress
# and without a terminal; the -v lines stay exactly as they were on their
# streams.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
EXP=$(dirname "$0")/expected
command -v script >/dev/null || { echo "script (bsdutils) is missing: scripts/deps.sh" >&2; exit 99; }

A=$G/basic.vma
# A bar line: percent, done / total, rate; it ends at 100% with the time.
BAR='[0-9]+\.[0-9]% [0-9.]+ (B|KiB|MiB|GiB) / [0-9.]+ (B|KiB|MiB|GiB)  [0-9.]+ (B|KiB|MiB|GiB)/s  '
FINAL='100\.0% 8\.6 MiB / 8\.6 MiB  [0-9.]+ (B|KiB|MiB|GiB)/s  in [0-9]+:[0-9][0-9]:[0-9][0-9]'

# on_tty CMD: run CMD (one shell word list, quoted with %q) on a pty;
# everything it prints (stdout and stderr) lands in $T/out.
on_tty() {
    local cmd
    cmd=$(printf '%q ' "$@")
    script -qec "$cmd" /dev/null </dev/null >"$T/out" 2>"$T/err"
    RC=$?
}

has_bar() { grep -qaE "$BAR" "$1"; }
no_bar() { ! grep -qaE "$BAR" "$1"; }
has_final() { grep -qaE "$FINAL" "$1"; }

# The -v lines with the bar taken out: drop each "\r...\033[K" drawing and
# the newline that ends the bar.
strip_bar() { sed -e 's/\r[^\r]*\x1b\[K//g' "$1" | sed '/^$/d'; }

case_ "verify on a terminal: the bar"
on_tty "$VMA" verify "$A"
expect_rc 0
check "bar drawn" has_bar "$T/out"
check "bar ends at 100%" has_final "$T/out"

case_ "verify on a terminal, --no-progress: no bar"
on_tty "$VMA" verify --no-progress "$A"
expect_rc 0
check "no bar" no_bar "$T/out"
check "nothing printed" [ "$(tr -d '\r\n' <"$T/out" | wc -c)" = 0 ]

case_ "verify without a terminal: no bar"
run "$VMA" verify "$A"
expect_ok
expect_out_empty

case_ "verify -p without a terminal: the bar on stderr"
run "$VMA" verify -p "$A"
expect_rc 0
expect_out_empty
check "bar on stderr" has_bar "$T/err"
check "bar ends at 100%" has_final "$T/err"
check "stderr ends with a newline" [ "$(tail -c 1 "$T/err" | od -An -c | tr -d ' ')" = '\n' ]

case_ "verify -v -p: stdout keeps the -v lines exactly"
run "$VMA" verify -v --progress "$A"
expect_rc 0
norm_duration <"$T/out" >"$T/got"
{ cat "$G/basic.list"; cat "$EXP/basic.progress"; } >"$T/want"
check "-v lines unchanged" cmp -s "$T/want" "$T/got"
check "bar on stderr" has_bar "$T/err"

case_ "verify -p --no-progress: the last one wins"
run "$VMA" verify -p --no-progress "$A"
expect_ok

case_ "verify -p of a compressed archive on stdin"
run_in "$G/basic.vma.zst" "$VMA" verify -p -
expect_rc 0
check "bar ends at 100%" has_final "$T/err"

case_ "extract on a terminal: the bar"
on_tty "$VMA" extract "$A" "$T/x1"
expect_rc 0
check "bar drawn" has_bar "$T/out"
check "DEVINFO lines still there" grep -qa "^DEVINFO $T/x1/tmp-disk-drive-scsi0.raw 8388608" "$T/out"
dir_sha256 "$T/x1" >"$T/sums"
check "extracted files" cmp -s "$G/basic.sha256" "$T/sums"

case_ "extract --no-progress on a terminal"
on_tty "$VMA" extract --no-progress "$A" "$T/x2"
expect_rc 0
check "no bar" no_bar "$T/out"

case_ "extract -p without a terminal: stdout unchanged"
run "$VMA" extract -p "$A" "$T/x3"
expect_rc 0
devinfo_lines "$G/basic.list" "$T/x3" >"$T/want"
expect_out_file "$T/want"
check "bar on stderr" has_final "$T/err"

case_ "extract without a terminal: no bar"
run "$VMA" extract "$A" "$T/x4"
expect_ok

# create: the -v lines are on stderr too; with the bar drawn between
# them, they are still all there, unchanged, in order.
"$VMA" extract "$A" "$T/src" >/dev/null 2>&1
S1=$T/src/disk-drive-scsi0.raw S2=$T/src/disk-drive-efidisk0.raw
case_ "create -v without the bar (reference)"
run "$VMA" create -v "$T/c1.vma" "a=$S1" "b=$S2"
expect_rc 0
cp "$T/err" "$T/create-v.err"
check "the reference has progress lines" grep -q '^progress 100% ' "$T/create-v.err"
case_ "create -v -p: the same lines and the bar"
run "$VMA" create -v -p "$T/c2.vma" "a=$S1" "b=$S2"
expect_rc 0
check "bar on stderr" has_bar "$T/err"
strip_bar "$T/err" >"$T/got"
check "-v lines unchanged" cmp -s "$T/create-v.err" "$T/got"
case_ "create on a terminal: the bar"
on_tty "$VMA" create "$T/c3.vma" "a=$S1"
expect_rc 0
check "bar drawn" has_bar "$T/out"
case_ "create --no-progress on a terminal"
on_tty "$VMA" create --no-progress "$T/c4.vma" "a=$S1"
expect_rc 0
check "no bar" no_bar "$T/out"
case_ "create without a terminal"
run "$VMA" create "$T/c5.vma" "a=$S1"
expect_ok

case_ "a failure ends the bar before the message"
head -c 1500000 "$A" >"$T/trunc.vma"
run "$VMA" verify -p "$T/trunc.vma"
expect_rc 2
check "the message is a line of its own" grep -qaE '^vma: verify failed - ' "$T/err"
check "last line is the message" bash -c 'tail -n 1 "$1" | grep -q "^vma: verify failed"' _ "$T/err"

case_ "checksum -p"
run "$VMA" checksum -p "$A"
expect_rc 0
check "bar on stderr" has_final "$T/err"

done_
