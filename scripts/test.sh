#!/usr/bin/env bash
# The test command: install missing packages, then build and test twice,
# with gcc (build/, which holds build/vma) and with clang (build-clang/),
# warnings as errors. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

status=0
passed=0
failed=0

# build_and_test <dir> <cc>: a failed setup or compile stops the script;
# failed tests are counted and make the script fail at the end.
build_and_test() {
    local dir=$1 cc=$2
    echo "== $cc: $dir"
    if [ -d "$dir/meson-private" ]; then
        meson setup --reconfigure "$dir" -Dwerror=true
    else
        CC=$cc meson setup "$dir" -Dwerror=true
    fi
    meson compile -C "$dir"
    meson test -C "$dir" --print-errorlogs || status=1
    local log=$dir/meson-logs/testlog.json
    if [ -f "$log" ]; then
        passed=$((passed + $(grep -c '"result": "OK"' "$log" || true)))
        failed=$((failed + $(grep -c -E '"result": "(FAIL|ERROR|TIMEOUT|UNEXPECTEDPASS)"' "$log" || true)))
    fi
}

build_and_test build gcc
build_and_test build-clang clang

echo "test.sh: $passed passed, $failed failed"
if [ $status -ne 0 ]; then
    echo "test.sh: FAILED" >&2
    exit 1
fi
