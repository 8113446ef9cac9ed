#!/usr/bin/env bash
# The test command: install missing packages, then build and test
#   1. with gcc (build/, which holds build/vma),
#   2. with clang (build-clang/),
#   3. with gcc and -fsanitize=address,undefined (build-asan/): any ASan,
#      LeakSanitizer or UBSan report aborts the process and fails its test,
#   4. with clang and -fsanitize=thread (build-tsan/): the tests that use
#      threads (embed_api, cancel_api, api_roundtrip); any report fails,
#   5. and once more the CLI tests and the corruption matrix's CLI sample
#      of build/, a sample of their vma commands (the first and every
#      third of each script) under valgrind (memcheck; any error or
#      definite leak fails),
#   6. the Debian packages (scripts/debian-check.sh: build, lintian, dpkg -x,
#      the installed command and a pkg-config program; counted as one test),
#   7. the README's demo from a fresh clone (exit 0, "demo OK", nothing left
#      in its TMPDIR; one test),
# all with warnings as errors. Prints the time of each stage; exits
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
passed=0
failed=0
skipped=0
stage_log=()
start_all=$SECONDS

# stage NAME CMD...: run CMD, remember how long it took.
stage() {
    local name=$1 t0=$SECONDS rc=0
    shift
    echo "== $name"
    "$@" || rc=$?
    stage_log+=("$(printf '%-46s %5ds%s' "$name" $((SECONDS - t0)) "$([ $rc = 0 ] || echo "  (failed)")")")
    return $rc
}

# count <testlog.json>: add its results to the totals.
count() {
    [ -f "$1" ] || return 0
    passed=$((passed + $(grep -c '"result": "OK"' "$1" || true)))
    skipped=$((skipped + $(grep -c '"result": "SKIP"' "$1" || true)))
    failed=$((failed + $(grep -c -E '"result": "(FAIL|ERROR|TIMEOUT|UNEXPECTEDPASS)"' "$1" || true)))
}

# setup <dir> <cc> [meson options...]: a failed setup or compile stops the
# script.
setup() {
    local dir=$1 cc=$2
    shift 2
    if [ -d "$dir/meson-private" ]; then
        meson setup --reconfigure "$dir" -Dwerror=true "$@"
    else
        CC=$cc meson setup "$dir" -Dwerror=true "$@"
    fi
    meson compile -C "$dir"
}

# run_tests <dir> [meson test options...]: failed tests are counted and
# make the script fail at the end.
run_tests() {
    local dir=$1
    shift
    meson test -C "$dir" --print-errorlogs "$@" || status=1
}

stage "dependencies (scripts/deps.sh)" bash scripts/deps.sh

stage "gcc: build (build/)" setup build gcc
stage "gcc: meson test" run_tests build || true
count build/meson-logs/testlog.json
# The corruption matrix's counts per class (they go into issue notes).
python3 - build/meson-logs/testlog.json <<'PY' || true
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    if "corruption_matrix" in t.get("name", ""):
        print("== " + t["name"] + " (gcc build)\n" + t.get("stdout", ""))
PY

# The gcc stage drives the CLI on every case of the corruption matrix; the
# clang and sanitizer stages still run every case in-process but the CLI
# only on every 25th, to keep the whole command well inside CI's time.
cli_sample() { VMA_MATRIX_CLI_STRIDE=25 "$@"; }
stage "clang: build (build-clang/)" setup build-clang clang
stage "clang: meson test" cli_sample run_tests build-clang || true
count build-clang/meson-logs/testlog.json

# gcc's sanitizers need the shared runtimes; shared modules (the preload
# shim) then have undefined sanitizer symbols, hence b_lundef=false.
stage "asan+ubsan: build (build-asan/)" setup build-asan gcc \
    -Db_sanitize=address,undefined -Db_lundef=false
export_san() {
    ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:print_summary=1 \
        UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1 \
        "$@"
}
stage "asan+ubsan: meson test" export_san cli_sample run_tests build-asan \
    --timeout-multiplier 3 || true
count build-asan/meson-logs/testlog.json

# ThreadSanitizer (clang) on the tests that use threads: the writer's
# workers and progress callback, counters read during a read, cancels
# from other threads, random-access reads from several threads. Only those
# targets are built; any report fails.
tsan_tests=(embed_api cancel_api api_roundtrip image_api backup_api)
tsan_build() {
    if [ -d build-tsan/meson-private ]; then
        meson setup --reconfigure build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false
    else
        CC=clang meson setup build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false
    fi
    meson compile -C build-tsan "${tsan_tests[@]/#/tests/}"
}
stage "tsan: build (build-tsan/, threaded tests)" tsan_build
stage "tsan: meson test (threaded tests)" \
    env TSAN_OPTIONS=halt_on_error=1:abort_on_error=1 \
    meson test -C build-tsan --no-rebuild --print-errorlogs --timeout-multiplier 3 \
    "${tsan_tests[@]}" || status=1
count build-tsan/meson-logs/testlog.json

# The CLI tests again with a sample of their vma commands under valgrind (the setup is
# in tests/meson.build; the matrix drives the CLI on every 25th case).
if command -v valgrind >/dev/null; then
    stage "valgrind: CLI tests + matrix sample (build/)" \
        run_tests build --setup valgrind --suite cli --suite matrix || true
    count build/meson-logs/testlog-valgrind.json
else
    echo "test.sh: valgrind is missing (scripts/deps.sh installs it)" >&2
    status=1
fi

# The Debian packages, built from a copy of the tree in a temporary
# directory and tried after dpkg -x (about 45 s here).
if stage "debian packages (scripts/debian-check.sh)" bash scripts/debian-check.sh; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    status=1
fi

# The README's first command as a new user runs it: from a fresh clone of
# HEAD, it prints "demo OK", exits 0 and leaves nothing in its TMPDIR.
demo_fresh() {
    local d rc=0
    d=$(mktemp -d)
    git clone -q . "$d/clone" && mkdir "$d/tmp" &&
        TMPDIR=$d/tmp bash "$d/clone/scripts/demo.sh" >"$d/demo.log" 2>&1 || rc=$?
    if [ $rc -ne 0 ] || [ "$(tail -n 1 "$d/demo.log")" != "demo OK" ] ||
        [ -n "$(ls -A "$d/tmp")" ]; then
        echo "demo from a fresh clone: exit $rc, left in TMPDIR: $(ls -A "$d/tmp" | tr '\n' ' ')"
        tail -n 20 "$d/demo.log"
        rc=1
    fi
    rm -rf "$d"
    return $rc
}
if stage "demo from a fresh clone (scripts/demo.sh)" demo_fresh; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    status=1
fi

echo
echo "test.sh: stage times"
printf '  %s\n' "${stage_log[@]}"
printf '  %-46s %5ds\n' "total" $((SECONDS - start_all))
echo "test.sh: $passed passed, $skipped skipped, $failed failed"
if [ $status -ne 0 ]; then
    echo "test.sh: FAILED" >&2
    exit 1
fi
