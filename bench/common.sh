# Helpers shared by the benchmarks (sourced): timing one step, running
# steps in rotating rounds, medians, and one line of the results table.
# Sourced from the repository's root dir ($repo); measure and row work in
# a dir with times/ and read $runs.
# SPDX-License-Identifier: MIT

die() { echo "bench: $*" >&2; exit 1; }

# find_vma: $VMA if set, else build/vma, built (after installing what is
# missing) in the repository.
find_vma() {
    if [ -z "${VMA:-}" ]; then
        bash scripts/deps.sh
        [ -d build/meson-private ] || meson setup build
        ninja -C build vma >/dev/null
        VMA=$repo/build/vma
    fi
}

# measure NAME CMD...: run CMD (stdout discarded) under /usr/bin/time and
# append "wall_s peak_rss_kib cpu_s" to times/NAME; print the run's figures.
# For a pipeline (sh -c) the RSS is that of its largest process, the CPU
# time (user + system) that of all of them. CPU time is much less noisy
# than wall time on a shared machine, and shows whether a slower step did
# more work or just got less of the CPUs.
measure() {
    local name=$1 t0 t1 line
    shift
    sync
    t0=$EPOCHREALTIME
    if ! /usr/bin/time -f '%M %U %S' -o time.out "$@" >/dev/null; then
        cat time.out >&2
        die "step $name failed: $*"
    fi
    t1=$EPOCHREALTIME
    # wall time from bash's microsecond clock (time's %e has 10 ms steps)
    line=$(tail -n 1 time.out | awk -v a="$t0" -v b="$t1" '{ printf "%.3f %d %.2f", b - a, $1, $2 + $3 }')
    echo "$line" >>"times/$name"
    awk -v n="$name" '{ printf "  %-12s %8.3f s wall %7.2f s cpu\n", n, $1, $3 }' <<<"$line"
}

# run_group STEP...: run the functions step_STEP, $runs rounds, each round
# starting one step later (a b c, b c a, c a b, ...) so that no step always
# runs right after the same other one.
run_group() {
    local steps=("$@") r i
    for ((r = 0; r < runs; r++)); do
        for ((i = 0; i < $#; i++)); do
            "step_${steps[(r + i) % $#]}"
        done
    done
}

# median NAME [FIELD]: median over the runs of the wall time (field 1) or
# CPU time (field 3); rss NAME: largest peak RSS (KiB).
median() { cut -d' ' -f"${2:-1}" "times/$1" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rss() { cut -d' ' -f2 "times/$1" | sort -n | tail -n 1; }

met=0
total=0
# row NAME BYTES BASIS BASELINE TARGET: one line of the table. BYTES / median
# wall time gives MiB/s; ratio = baseline time / step time (> 1: faster
# than the baseline). TARGET is "" (no target), ">=X" or ">X" on the
# ratio, or "<Xs" on the wall time.
row() {
    local name=$1 bytes=$2 basis=$3 base=$4 target=$5 t bt="" verdict="" ratio="-" cratio="-"
    t=$(median "$name")
    [ -n "$base" ] && bt=$(median "$base")
    if [ -n "$bt" ]; then
        ratio=$(awk -v b="$bt" -v t="$t" 'BEGIN { printf "%.2f", (t > 0 ? b / t : 0) }')
        cratio=$(awk -v b="$(median "$base" 3)" -v t="$(median "$name" 3)" 'BEGIN { printf "%.2f", (t > 0 ? b / t : 0) }')
    fi
    case $target in
    ">="*) verdict=$(awk -v r="$ratio" -v x="${target#>=}" 'BEGIN { print (r + 0 >= x + 0) ? "PASS" : "FAIL" }') ;;
    ">"*) verdict=$(awk -v r="$ratio" -v x="${target#>}" 'BEGIN { print (r + 0 > x + 0) ? "PASS" : "FAIL" }') ;;
    "<"*s) verdict=$(awk -v t="$t" -v x="${target#<}" 'BEGIN { sub(/s$/, "", x); print (t + 0 < x + 0) ? "PASS" : "FAIL" }') ;;
    esac
    if [ -n "$verdict" ]; then
        total=$((total + 1))
        [ "$verdict" = PASS ] && met=$((met + 1))
    fi
    awk -v n="$name" -v t="$t" -v c="$(median "$name" 3)" -v by="$bytes" -v ba="$basis" \
        -v k="$(rss "$name")" -v b="${base:--}" -v r="$ratio" -v cr="$cratio" -v g="${target:--}" -v v="${verdict:--}" 'BEGIN {
        printf "%-12s %8.3f %7.2f %9.0f %-4s %8.1f  %-12s %6s %6s  %-7s %s\n", n, t, c, (t > 0 ? by / 1048576 / t : 0), ba, k / 1024, b, r, cr, g, v
    }'
}

# private_vma: copy $VMA into the current directory as ./vma (others may
# rebuild build/vma during a run), with the shared library it loads from
# its build directory ($ORIGIN/lib), and set vma to the copy.
private_vma() {
    cp "$VMA" ./vma
    if compgen -G "$(dirname "$VMA")/lib/libvmarchive.so*" >/dev/null; then
        mkdir -p lib
        find "$(dirname "$VMA")/lib" -maxdepth 1 -name "libvmarchive.so*" ! -type d -exec cp -P {} lib/ \;
    fi
    vma=$PWD/vma
}
