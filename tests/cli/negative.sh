#!/bin/bash
# Failures: exit 2 and exactly one stderr line starting "vma: ". Missing
# and non-VMA files, truncated archives through standard input, corrupt
# archives, and crafted names that try to leave the target directory.
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
VMA_BIN=$1 # the binary itself, without VMA_RUNNER (see closed descriptors)

A=$G/basic.vma
NONE=$T/no-such.vma

# --- missing files and non-archives -------------------------------------

for cmd in "list" "config" "verify" "verify -v" "extract"; do
    case_ "$cmd of a missing file"
    if [ "$cmd" = extract ]; then
        # shellcheck disable=SC2086
        run "$VMA" $cmd "$NONE" "$T/x-missing"
        check "no directory for a missing archive" [ ! -e "$T/x-missing" ]
    else
        # shellcheck disable=SC2086
        run "$VMA" $cmd "$NONE"
    fi
    expect_failure
    expect_err_has "$NONE"
done

head -c 20000 /dev/zero >"$T/zeros.bin"
printf 'not an archive at all\n' >"$T/text.txt"
cp "$G/basic.list" "$T/list.txt"
for f in zeros.bin text.txt; do
    for cmd in list config verify; do
        case_ "$cmd of $f"
        run "$VMA" $cmd "$T/$f"
        expect_failure
    done
done

case_ "verify of an empty stdin"
run_in /dev/null "$VMA" verify -
expect_failure
expect_err_has "truncated"

# --- truncated archives through standard input ------------------------

# header, blob table, extent header, extent data, extent boundary, last byte
for n in 100 12288 13000 13400 2000000 1238528 2426880 2959871; do
    case_ "head -c $n | verify -"
    head -c $n "$A" | "$VMA" verify - >"$T/out" 2>"$T/err"
    RC=$?
    expect_failure
    expect_err_has "truncated"
    if [ $n -gt 13312 ]; then
        expect_err_re '^vma: verify failed - '
    fi

    case_ "head -c $n | extract -"
    head -c $n "$A" | "$VMA" extract - "$T/tx-$n" >"$T/out" 2>"$T/err"
    RC=$?
    expect_failure keep-stdout
    expect_err_has "truncated"
    check "nothing left of the target directory" [ ! -e "$T/tx-$n" ]
done

case_ "verify -v of a truncated archive prints the list, then fails"
head -c 1238528 "$A" >"$T/cut.vma"
run "$VMA" verify -v "$T/cut.vma"
expect_failure keep-stdout
expect_err_re '^vma: verify failed - .*missing cluster'
check "list lines first" cmp -s "$G/basic.list" <(head -n 5 "$T/out")

# --- corrupt archives ---------------------------------------------------

# patch FILE OFFSET BYTE-OCTAL: overwrite one byte
patch() { printf "\\$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

case_ "header MD5 mismatch"
cp "$A" "$T/md5.vma"
patch "$T/md5.vma" 40 377
run "$VMA" list "$T/md5.vma"
expect_failure
expect_err_has "MD5"

case_ "extent MD5 mismatch (second extent): verify"
cp "$A" "$T/emd5.vma"
patch "$T/emd5.vma" $((1238528 + 24)) 0
run "$VMA" verify "$T/emd5.vma"
expect_failure
expect_err_re '^vma: verify failed - .*1238528'

case_ "extent MD5 mismatch: extract removes what it made"
run "$VMA" extract "$T/emd5.vma" "$T/emd5.dir"
expect_failure keep-stdout
expect_err_re '^vma: restore failed - '
check "directory removed" [ ! -e "$T/emd5.dir" ]

case_ "list of a corrupt extent still works (list reads the header only)"
run "$VMA" list "$T/emd5.vma"
expect_ok
expect_out_file "$G/basic.list"

# --- names that try to leave the target directory -----------------------

# Renamed and re-signed by vma_craft: only the name rules can refuse them.
mkdir -p "$T/jail"
for spec in "config 0 ../x" "config 1 ../../escape" "config 0 /tmp/vma-abs-$$" \
    "device 1 ../x" "device 2 a/b" "config 1 .." "device 1 ."; do
    set -- $spec
    kind=$1 idx=$2 name=$3
    case_ "$kind named '$name'"
    rm -f "$T/evil.vma"
    if ! "$CRAFT" "rename-$kind" "$A" "$T/evil.vma" "$idx" "$name"; then
        fail "vma_craft rename-$kind"
        continue
    fi
    for cmd in list verify; do
        run "$VMA" $cmd "$T/evil.vma"
        expect_failure
    done
    run "$VMA" extract "$T/evil.vma" "$T/jail/target"
    expect_failure keep-stdout
    check "nothing written outside the target: $(ls -A "$T/jail" "$T" | tr '\n' ' ')" \
        [ ! -e "$T/jail/x" -a ! -e "$T/x" -a ! -e "$T/jail/escape" -a ! -e "$T/escape" -a \
        ! -e "/tmp/vma-abs-$$" -a ! -e "$T/jail/a" ]
    check "no target directory left" [ ! -e "$T/jail/target" ]
    run_in "$T/evil.vma" "$VMA" extract - "$T/jail/target"
    expect_failure keep-stdout
    check "nothing written outside the target (stdin)" \
        [ ! -e "$T/jail/x" -a ! -e "$T/x" -a ! -e "$T/jail/escape" -a ! -e "$T/escape" ]
done

# --- names that try to forge output lines ------------------------------

absent() { ! grep -q "$@"; }

for spec in "device 1" "config 0"; do
    set -- $spec
    kind=$1 idx=$2
    name=$'x\nDEV: dev_id=9 size: 1 devname: forged\x1b[0m'
    case_ "$kind name with a newline and an escape"
    rm -f "$T/forge.vma"
    "$CRAFT" "rename-$kind" "$A" "$T/forge.vma" "$idx" "$name" || fail "vma_craft"
    for cmd in list verify "extract-to-dir"; do
        if [ $cmd = extract-to-dir ]; then
            run "$VMA" extract -v "$T/forge.vma" "$T/forge.dir"
            expect_failure keep-stdout
            check "no target directory left" [ ! -e "$T/forge.dir" ]
        else
            run "$VMA" $cmd "$T/forge.vma"
            expect_failure
        fi
        check "$cmd: no forged line" absent 'forged' "$T/out"
        check "$cmd: no escape byte on stderr" absent $'\x1b' "$T/err"
        expect_err_has "'x\\nDEV: dev_id=9 size: 1 devname: forged\\x1b[0m'"
    done
done

# The crafting itself is sound: a harmless new name is accepted.
case_ "renamed config that is valid"
"$CRAFT" rename-config "$A" "$T/ok.vma" 1 renamed.fw || fail "vma_craft"
run "$VMA" verify "$T/ok.vma"
expect_ok
run "$VMA" config "$T/ok.vma" -c renamed.fw
expect_ok
run "$VMA" extract "$T/ok.vma" "$T/ok.dir"
expect_ok
check "renamed config extracted" [ -f "$T/ok.dir/renamed.fw" ]

# --- closed standard descriptors -------------------------------------------

# With descriptor 0 closed, "-" must not read whatever is opened next (the
# library's eventfd once took descriptor 0 and vma hung reading it).
# These run the binary itself, not through VMA_RUNNER: valgrind cannot
# start with descriptor 2 closed.
for cmd in list verify extract; do
    case_ "$cmd - with standard input closed"
    dir=
    [ $cmd = extract ] && dir=$T/closed.dir
    timeout 10 "$VMA_BIN" $cmd - $dir <&- >"$T/out" 2>"$T/err"
    RC=$?
    expect_failure
    expect_err "vma: standard input is closed
"
    [ -n "$dir" ] && check "no target directory left" [ ! -e "$dir" ]
done

case_ "list with standard output closed"
timeout 10 "$VMA_BIN" list "$A" >&- 2>"$T/err"
RC=$?
: >"$T/out"
expect_failure
expect_err "vma: standard output is closed
"

case_ "extract with standard output closed (DEVINFO lines)"
timeout 10 "$VMA_BIN" extract "$A" "$T/closed.dir" >&- 2>"$T/err"
RC=$?
: >"$T/out"
expect_failure
check "no target directory left" [ ! -e "$T/closed.dir" ]

case_ "verify with standard output closed prints nothing and succeeds"
timeout 10 "$VMA_BIN" verify "$A" >&- 2>"$T/err"
RC=$?
expect_ok

case_ "list and a failing verify with standard error closed"
timeout 10 "$VMA_BIN" list "$A" 2>&- >"$T/out"
RC=$?
expect_rc 0
check "list output" grep -q '^DEV: dev_id=1 ' "$T/out"
head -c 20000 "$A" >"$T/short.vma"
timeout 10 "$VMA_BIN" verify "$T/short.vma" 2>&- >"$T/out"
RC=$?
expect_rc 2

case_ "create into exec: with all three closed"
head -c 1048576 /dev/urandom >"$T/closed.raw"
timeout 20 "$VMA_BIN" create "exec:cat >'$T/closed.vma'" drive-scsi0="$T/closed.raw" <&- >&- 2>&-
RC=$?
expect_rc 0
run "$VMA" verify "$T/closed.vma"
expect_ok

# --- output errors ------------------------------------------------------

case_ "extract into a directory that cannot be made"
run "$VMA" extract "$A" "$T/no/such/parent"
expect_failure

if [ -w /dev/full ]; then
    case_ "list to a full stdout"
    "$VMA" list "$A" >/dev/full 2>"$T/err"
    RC=$?
    : >"$T/out"
    expect_failure
    case_ "config to a full stdout"
    "$VMA" config "$A" >/dev/full 2>"$T/err"
    RC=$?
    : >"$T/out"
    expect_failure
fi

done_
