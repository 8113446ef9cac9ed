#!/bin/bash
# The golden archives (written by Proxmox's own tool): list, config, verify,
# verify -v, extract, from files and from standard input, and the
# compressed copies through a pipe. Expected output: tests/golden/X.list,
# X.conf, X.sha256, X.sizes (from the deployed tool) and
# tests/cli/expected/X.progress (the verify -v lines after the list lines,
# computed from the rules in docs/cli.md; the duration is normalized).
# SPDX-License-Identifier: MIT
. "$(dirname "$0")/common.sh"
EXP=$(dirname "$0")/expected

ARCHIVES="basic legacy zero-disk odd-sizes diskless"

for n in $ARCHIVES; do
    a=$G/$n.vma

    case_ "$n: list"
    run "$VMA" list "$a"
    expect_ok
    expect_out_file "$G/$n.list"

    case_ "$n: list from stdin"
    run_in "$a" "$VMA" list -
    expect_ok
    expect_out_file "$G/$n.list"

    case_ "$n: list from a pipe"
    cat "$a" | "$VMA" list - >"$T/out" 2>"$T/err"
    RC=$?
    expect_ok
    expect_out_file "$G/$n.list"

    if [ -f "$G/$n.conf" ]; then
        case_ "$n: config"
        run "$VMA" config "$a"
        expect_ok
        expect_out_file "$G/$n.conf"

        case_ "$n: config -c qemu-server.conf"
        run "$VMA" config "$a" -c qemu-server.conf
        expect_ok
        expect_out_file "$G/$n.conf"

        case_ "$n: config from stdin"
        run_in "$a" "$VMA" config - -c qemu-server.conf
        expect_ok
        expect_out_file "$G/$n.conf"
    else
        case_ "$n: config without qemu-server.conf"
        run "$VMA" config "$a"
        expect_failure
        expect_err "vma: unable to find configuration data 'qemu-server.conf'
"
    fi

    # every other config, checked against the digest of the extracted file
    for cfg in $(sed -n 's/^CFG: size: [0-9]* name: //p' "$G/$n.list"); do
        case_ "$n: config -c $cfg"
        run "$VMA" config "$a" -c "$cfg"
        expect_ok
        want=$(sed -n "s|^\([0-9a-f]*\)  ./$cfg\$|\1|p" "$G/$n.sha256")
        got=$(sha256sum <"$T/out" | cut -d' ' -f1)
        check "config $cfg has sha256 $got, expected $want" [ "$got" = "$want" ]
        size=$(sed -n "s/^CFG: size: \([0-9]*\) name: $cfg\$/\1/p" "$G/$n.list")
        check "config $cfg has $(wc -c <"$T/out") bytes, expected $size" \
            [ "$(wc -c <"$T/out")" = "$size" ]
    done

    case_ "$n: config -c missing"
    run "$VMA" config "$a" -c no-such.conf
    expect_failure
    expect_err "vma: unable to find configuration data 'no-such.conf'
"

    case_ "$n: verify"
    run "$VMA" verify "$a"
    expect_ok
    expect_out_empty

    case_ "$n: verify from stdin"
    run_in "$a" "$VMA" verify -
    expect_ok
    expect_out_empty

    case_ "$n: verify -v"
    run "$VMA" verify -v "$a"
    expect_ok
    norm_duration <"$T/out" >"$T/out.norm"
    mv "$T/out.norm" "$T/out"
    cat "$G/$n.list" "$EXP/$n.progress" >"$T/want.v"
    expect_out_file "$T/want.v"

    case_ "$n: verify -v from stdin"
    run_in "$a" "$VMA" verify -v -
    expect_ok
    norm_duration <"$T/out" >"$T/out.norm"
    mv "$T/out.norm" "$T/out"
    expect_out_file "$T/want.v"

    for how in file stdin; do
        d=$T/x-$n-$how
        case_ "$n: extract ($how)"
        if [ $how = file ]; then
            run "$VMA" extract "$a" "$d"
        else
            run_in "$a" "$VMA" extract - "$d"
        fi
        expect_ok
        devinfo_lines "$G/$n.list" "$d" >"$T/want.devinfo"
        expect_out_file "$T/want.devinfo"
        dir_sha256 "$d" >"$T/got.sha256"
        check "sha256 of the extracted files differ: $(diff "$G/$n.sha256" "$T/got.sha256" | head -5)" \
            cmp -s "$G/$n.sha256" "$T/got.sha256"
        dir_sizes "$d" >"$T/got.sizes"
        check "sizes of the extracted disks differ: $(diff "$G/$n.sizes" "$T/got.sizes" | head -5)" \
            cmp -s "$G/$n.sizes" "$T/got.sizes"
        check "sparse disks: $n ($how) uses more blocks than data" \
            [ "$(du -sk "$d" | cut -f1)" -le "$(($(stat -c %s "$a") / 1024 + 64))" ]
        rm -rf "$d"
    done

    case_ "$n: extract -v"
    d=$T/xv-$n
    run "$VMA" extract -v "$a" "$d"
    expect_ok
    norm_duration <"$T/out" >"$T/out.norm"
    mv "$T/out.norm" "$T/out"
    { devinfo_lines "$G/$n.list" "$d"; cat "$EXP/$n.progress"; } >"$T/want.xv"
    expect_out_file "$T/want.xv"
    dir_sha256 "$d" >"$T/got.sha256"
    check "sha256 after extract -v" cmp -s "$G/$n.sha256" "$T/got.sha256"
    rm -rf "$d"
done

# The compressed copies of basic.vma, decompressed into standard input.
for z in "zst:zstd -dc" "gz:gzip -dc" "lzo:lzop -dc"; do
    ext=${z%%:*}
    cmd=${z#*:}
    if ! command -v "${cmd%% *}" >/dev/null; then
        echo "skipping basic.vma.$ext: ${cmd%% *} not installed"
        continue
    fi
    case_ "basic.vma.$ext | verify -"
    $cmd "$G/basic.vma.$ext" | "$VMA" verify - >"$T/out" 2>"$T/err"
    RC=$?
    expect_ok
    expect_out_empty

    case_ "basic.vma.$ext | extract -"
    d=$T/z-$ext
    $cmd "$G/basic.vma.$ext" | "$VMA" extract - "$d" >"$T/out" 2>"$T/err"
    RC=$?
    expect_ok
    dir_sha256 "$d" >"$T/got.sha256"
    check "sha256 of basic.vma.$ext extracted" cmp -s "$G/basic.sha256" "$T/got.sha256"
    rm -rf "$d"
done

# The library reads compressed archives directly (vma.h): by path and from
# standard input.
for ext in zst gz lzo; do
    z=$G/basic.vma.$ext
    case_ "list basic.vma.$ext"
    run "$VMA" list "$z"
    expect_ok
    expect_out_file "$G/basic.list"

    case_ "config basic.vma.$ext"
    run_in "$z" "$VMA" config -
    expect_ok
    expect_out_file "$G/basic.conf"

    case_ "verify -v basic.vma.$ext"
    run "$VMA" verify -v "$z"
    expect_ok
    norm_duration <"$T/out" >"$T/out.norm"
    mv "$T/out.norm" "$T/out"
    cat "$G/basic.list" "$EXP/basic.progress" >"$T/want.v"
    expect_out_file "$T/want.v"

    for how in file stdin; do
        case_ "extract basic.vma.$ext ($how)"
        d=$T/zd-$ext-$how
        if [ $how = file ]; then
            run "$VMA" extract "$z" "$d"
        else
            run_in "$z" "$VMA" extract - "$d"
        fi
        expect_ok
        devinfo_lines "$G/basic.list" "$d" >"$T/want.devinfo"
        expect_out_file "$T/want.devinfo"
        dir_sha256 "$d" >"$T/got.sha256"
        check "sha256 of basic.vma.$ext extracted ($how)" cmp -s "$G/basic.sha256" "$T/got.sha256"
        rm -rf "$d"
    done

    # A writer that stays connected after the archive (a slow or stalled
    # source): list needs only the header, so it must answer at once, not
    # when the writer closes. vma's time is bounded by a watchdog.
    case_ "list of basic.vma.$ext from a pipe whose writer stays open"
    rm -f "$T/open.fifo"
    mkfifo "$T/open.fifo"
    "$VMA" list - <"$T/open.fifo" >"$T/out" 2>"$T/err" &
    pid=$!
    exec 3>"$T/open.fifo"
    cat "$z" >&3 2>/dev/null
    for i in $(seq 600); do
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    check "list ended while the writer was still open" eval '! kill -0 $pid 2>/dev/null'
    exec 3>&-
    wait $pid
    RC=$?
    expect_ok
    expect_out_file "$G/basic.list"

    case_ "verify of basic.vma.$ext cut in half"
    size=$(stat -c %s "$z")
    head -c $((size / 2)) "$z" >"$T/half.$ext"
    run "$VMA" verify "$T/half.$ext"
    expect_failure
    expect_err_re '^vma: verify failed - .*truncated'
done

done_
