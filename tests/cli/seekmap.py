#!/usr/bin/python3
# seekmap.py FILE: the data ranges lseek(SEEK_DATA/SEEK_HOLE) reports,
# one "start end" line each; exit 1 (with a message) when they disagree
# with the file's contents: every 4 KiB block that holds a non-zero byte
# must lie in a data range, and every hole must read as zeros. (The
# archives of the tests store no all-zero block, so for them data ranges
# are exactly the non-zero blocks, up to the file end.)
# SPDX-License-Identifier: MIT
import os
import sys

BLOCK = 4096
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
ranges = []
pos = 0
while pos < size:
    try:
        start = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(fd, start, os.SEEK_HOLE)
    if end <= start or end > size:
        sys.exit(f"seekmap: bad SEEK_HOLE {end} after data at {start}")
    ranges.append((start, end))
    pos = end
bad = 0
exact = len(sys.argv) > 2 and sys.argv[2] == "exact"
for b in range(0, size, BLOCK):
    data = os.pread(fd, min(BLOCK, size - b), b)
    inside = any(s <= b < e for s, e in ranges)
    nonzero = any(data)
    if nonzero and not inside:
        print(f"seekmap: block at {b} holds data but lies in a hole", file=sys.stderr)
        bad += 1
    if exact and inside and not nonzero:
        print(f"seekmap: block at {b} is zero but reported as data", file=sys.stderr)
        bad += 1
    if bad > 5:
        break
for s, e in ranges:
    print(s, e)
sys.exit(1 if bad else 0)
