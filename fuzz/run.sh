#!/usr/bin/env bash
# Builds the libFuzzer binaries with ASan+UBSan (build-fuzz/) and fuzzes
# one target, or merges what it found into the committed corpus:
#   fuzz/run.sh <target> [seconds]   fuzz (default 1800 s); new inputs go to
#                                    build-fuzz/corpus-<target>, crashes to
#                                    fuzz/crashes/
#   fuzz/run.sh <target> merge       minimize (by edges) fuzz/corpus/<target> plus
#                                    build-fuzz/corpus-<target> into
#                                    fuzz/corpus/<target> (crash-* kept)
# Targets: header verify extract restore_map zstd gzip lzop index salvage image checksum.
# Extra libFuzzer flags go in FUZZ_FLAGS (e.g. FUZZ_FLAGS=-jobs=2).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
target=$1
what=${2:-1800}
cd "$top"
case $target in
header|verify|extract|restore_map|zstd|gzip|lzop|index|salvage|image|checksum) ;;
*) echo "usage: fuzz/run.sh <header|verify|extract|restore_map|zstd|gzip|lzop|index|salvage|image|checksum> [seconds|merge]" >&2; exit 2 ;;
esac
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang CFLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION" \
        meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
        --buildtype=debugoptimized >/dev/null
fi
ninja -C build-fuzz "fuzz/fuzz_${target}_libfuzzer" >/dev/null
bin=build-fuzz/fuzz/fuzz_${target}_libfuzzer
corpus=fuzz/corpus/$target
mkdir -p "build-fuzz/corpus-$target" "$corpus" fuzz/crashes
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# extract's scratch files: on tmpfs an input runs about a third faster.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi
# Inputs stay small: a few extents of an archive, a few codec blocks.
flags=(-max_len=131072 -rss_limit_mb=4096 -timeout=30 -dict=fuzz/vma.dict)
# The checksum target runs the command, which says why each input fails.
[ "$target" = checksum ] && flags+=(-close_fd_mask=2)

if [ "$what" = merge ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/min"
    # Edges only (no hit counts): one input per new edge keeps it small.
    "$bin" -merge=1 -use_counters=0 "${flags[@]}" "$tmp/min" "$corpus" "build-fuzz/corpus-$target" \
        2>"$tmp/log" ||
        { tail -20 "$tmp/log" >&2; exit 1; }
    # The inputs of fixed findings stay by name, whatever their coverage.
    find "$corpus" -maxdepth 1 -type f -name 'crash-*' -exec cp {} "$tmp/min/" \;
    find "$corpus" -maxdepth 1 -type f -delete
    cp "$tmp/min"/* "$corpus/"
    grep -h "MERGE-OUTER: [0-9]* new files" "$tmp/log" || true
    echo "$corpus: $(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1)"
    exit 0
fi
exec "$bin" "build-fuzz/corpus-$target" "$corpus" "${flags[@]}" ${FUZZ_FLAGS:-} \
    -max_total_time="$what" -artifact_prefix="fuzz/crashes/$target-" -print_final_stats=1
