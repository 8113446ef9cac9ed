#!/usr/bin/env bash
# Builds the libFuzzer binaries with ASan+UBSan (build-fuzz/) and runs one
# target for a given time: fuzz/run.sh <header|verify|extract> [seconds].
# New inputs go to build-fuzz/corpus-<target>; crashes to fuzz/crashes/.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
target=$1
secs=${2:-1800}
cd "$top"
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang CFLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION" \
        meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
        --buildtype=debugoptimized >/dev/null
fi
ninja -C build-fuzz "fuzz/fuzz_${target}_libfuzzer" >/dev/null
mkdir -p "build-fuzz/corpus-$target" fuzz/crashes
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
exec "build-fuzz/fuzz/fuzz_${target}_libfuzzer" "build-fuzz/corpus-$target" "fuzz/corpus/$target" \
    -max_total_time="$secs" -max_len=262144 -rss_limit_mb=4096 -timeout=30 \
    -artifact_prefix="fuzz/crashes/$target-" -print_final_stats=1
