#!/usr/bin/env bash
# Live backup benchmark (issue 18): vma backup of a running QEMU (TCG, -S)
# against QEMU's own blockdev-backup sync=full of the same disk into a
# local raw file, paired run by run; vma's peak RSS; the fleecing space a
# backup uses while the disk is overwritten. Figures and floors in
# bench/backup.py. A benchmark, not a test: run it on a quiet machine.
#
#   bash bench/backup.sh [--size MiB] [--runs N] [--check]   (default 4096 MiB, 3 runs)
#
# VMA=<path> times another build. Needs qemu-system-x86 (scripts/deps.sh);
# root for the tmpfs of the fleecing measurement.
# SPDX-License-Identifier: MIT
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=bench/common.sh
source bench/common.sh
find_vma
exec /usr/bin/python3 bench/backup.py "$VMA" "$@"
