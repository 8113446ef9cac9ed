# Shared helpers of the CLI tests; sourced by every script.
# Usage of a script: <script> <vma-binary> <golden-dir> <vma_craft-binary>
# SPDX-License-Identifier: MIT

set -u
if [ $# -lt 3 ]; then
    echo "usage: $0 <vma> <golden-dir> <vma_craft>" >&2
    exit 99
fi
VMA=$1
G=$2
CRAFT=$3
export TZ=UTC LC_ALL=C

T=$(mktemp -d "${TMPDIR:-/tmp}/vma-cli.XXXXXX") || exit 99
# vma mount's index cache (else ~/.cache or, for root, /var/cache) goes
# with the test's directory.
export XDG_CACHE_HOME=$T/xdg
trap 'rm -rf "$T"' EXIT
trap 'exit 143' TERM INT # so that the EXIT trap cleans up after a timeout

# VMA_RUNNER: a prefix for vma commands (e.g. "valgrind -q
# --error-exitcode=99 ..."); a wrapper script keeps "$VMA" one word.
# VMA_RUNNER_EVERY=N (default 1) puts only the first and then every Nth
# vma command of a script under the prefix, the others run as they are:
# the valgrind stage samples every test's commands rather than dropping
# tests. The wrapper counts with shell builtins only (some tests run it
# with a PATH that has nothing but the runner).
if [ -n "${VMA_RUNNER:-}" ]; then
    every=${VMA_RUNNER_EVERY:-1}
    printf '%s\n' '#!/bin/sh' \
        "n=0; read n 2>/dev/null <\"$T/vma-runner.count\"" \
        "echo \$((n + 1)) >\"$T/vma-runner.count\"" \
        "[ \$((n % $every)) -eq 0 ] && exec $VMA_RUNNER $(printf %q "$VMA") \"\$@\"" \
        "exec $(printf %q "$VMA") \"\$@\"" >"$T/vma-runner" &&
        chmod +x "$T/vma-runner" || exit 99
    VMA=$T/vma-runner
fi

FAILS=0
CHECKS=0
CASE=""

# case NAME: names the checks that follow in failure messages.
case_() { CASE=$1; }

fail() {
    FAILS=$((FAILS + 1))
    echo "FAIL [$CASE]: $*" >&2
}

# run CMD...: stdout to $T/out, stderr to $T/err, exit status in RC.
run() {
    "$@" >"$T/out" 2>"$T/err"
    RC=$?
}

# run_in FILE CMD...: as run, with FILE on standard input.
run_in() {
    local input=$1
    shift
    "$@" <"$input" >"$T/out" 2>"$T/err"
    RC=$?
}

show() { head -c 600 "$1" | sed 's/^/    | /'; }

# Under VMA_RUNNER (valgrind), drop valgrind's own notes ("--PID-- ..."
# lines: it does not know pidfd_open(2), answers ENOSYS and says so; the
# library's fallback then runs). Its error reports ("==PID==") stay, and
# fail the run through --error-exitcode anyway.
strip_runner_notes() {
    [ -n "${VMA_RUNNER:-}" ] && [ -f "$T/err" ] || return 0
    grep -v '^--[0-9]*-- ' "$T/err" >"$T/err.vg"
    mv "$T/err.vg" "$T/err"
}

expect_rc() {
    strip_runner_notes
    CHECKS=$((CHECKS + 1))
    if [ "$RC" != "$1" ]; then
        fail "exit status $RC, expected $1"
        echo "    stderr:" >&2
        show "$T/err" >&2
    fi
}

# stdout equals a file / a string (printf %s, so give the newlines)
expect_out_file() {
    CHECKS=$((CHECKS + 1))
    if ! cmp -s "$1" "$T/out"; then
        fail "stdout differs from $1"
        diff "$1" "$T/out" | head -20 | sed 's/^/    /' >&2
    fi
}
expect_out() {
    printf '%s' "$1" >"$T/want"
    expect_out_file "$T/want"
}
expect_err() {
    strip_runner_notes
    CHECKS=$((CHECKS + 1))
    printf '%s' "$1" >"$T/want"
    if ! cmp -s "$T/want" "$T/err"; then
        fail "stderr differs"
        diff "$T/want" "$T/err" | head -20 | sed 's/^/    /' >&2
    fi
}
expect_out_empty() {
    CHECKS=$((CHECKS + 1))
    [ -s "$T/out" ] && { fail "stdout not empty"; show "$T/out" >&2; }
    return 0
}
expect_err_empty() {
    strip_runner_notes
    CHECKS=$((CHECKS + 1))
    [ -s "$T/err" ] && { fail "stderr not empty"; show "$T/err" >&2; }
    return 0
}

# success: exit 0 and nothing on stderr
expect_ok() {
    expect_rc 0
    expect_err_empty
}

# A failure: exit 2, nothing on stdout unless allowed (give "keep-stdout"),
# and exactly one line on stderr that starts with "vma: ".
expect_failure() {
    expect_rc 2
    [ "${1:-}" = keep-stdout ] || expect_out_empty
    CHECKS=$((CHECKS + 1))
    local lines
    lines=$(wc -l <"$T/err")
    if [ "$lines" != 1 ] || ! head -c 5 "$T/err" | grep -q '^vma: $' ||
        [ "$(tail -c 1 "$T/err" | od -An -c | tr -d ' ')" != '\n' ]; then
        fail "stderr is not exactly one line starting 'vma: '"
        show "$T/err" >&2
    fi
}

# The stderr line contains a fixed string.
expect_err_has() {
    strip_runner_notes
    CHECKS=$((CHECKS + 1))
    grep -qF -- "$1" "$T/err" || { fail "stderr lacks '$1'"; show "$T/err" >&2; }
}

# The stderr line matches an extended regular expression.
expect_err_re() {
    strip_runner_notes
    CHECKS=$((CHECKS + 1))
    grep -qE -- "$1" "$T/err" || { fail "stderr does not match /$1/"; show "$T/err" >&2; }
}

check() {
    CHECKS=$((CHECKS + 1))
    local what=$1
    shift
    "$@" || fail "$what"
}

# The usage text, as `vma -h` prints it.
usage_text() { "$VMA" -h 2>/dev/null; }

# A usage error: exit 1, nothing on stdout, usage text on stderr.
expect_usage() {
    expect_rc 1
    expect_out_empty
    CHECKS=$((CHECKS + 1))
    usage_text >"$T/usage"
    if [ ! -s "$T/usage" ]; then
        fail "no usage text from vma -h"
    elif ! tail -c "$(wc -c <"$T/usage")" "$T/err" | cmp -s - "$T/usage"; then
        fail "stderr does not end with the usage text"
        show "$T/err" >&2
    fi
}

# sha256 list of a directory as the golden X.sha256 files have it.
dir_sha256() {
    (cd "$1" && find . -type f | sort | xargs -r sha256sum)
}

# "name size" of the extracted disks, as the golden X.sizes files have it.
dir_sizes() {
    (cd "$1" && for f in $(find . -maxdepth 1 -name 'disk-*.raw' | sort); do
        echo "${f#./} $(stat -c %s "$f")"
    done)
}

# The DEVINFO lines `vma extract` prints for an archive, from its .list.
devinfo_lines() {
    local list=$1 dir=$2
    sed -n 's/^DEV: dev_id=[0-9]* size: \([0-9]*\) devname: \(.*\)$/DEVINFO '"$(printf '%s' "$dir" | sed 's/[\/&]/\\&/g')"'\/tmp-disk-\2.raw \1/p' "$list"
}

# wait_for PATH [SECONDS]: until PATH exists (a command is in flight, a
# server listens); gives up after SECONDS (120) so a broken build cannot
# hang the suite.
wait_for() {
    local i
    for i in $(seq $((${2:-120} * 10))); do
        [ -e "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

# ends_within SECONDS PID: whether PID ends within SECONDS (a hang check
# with a wide margin, not a timing assertion).
ends_within() {
    local i
    for i in $(seq $(($1 * 10))); do
        kill -0 "$2" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Replace the time-dependent part of progress lines.
norm_duration() { sed 's/, duration [0-9][0-9]* sec)$/, duration N sec)/'; }

done_() {
    echo "$(basename "$0"): $CHECKS checks, $FAILS failures"
    [ "$FAILS" = 0 ]
    exit $?
}
