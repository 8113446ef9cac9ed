#!/usr/bin/env python3
"""Compute tests/cli/expected/X.progress: the lines `vma verify -v X.vma`
prints after the list lines, from the rules in docs/cli.md (not from our
vma). Kept to show how the frozen files were made; the tests do not run it.

  percent = clusters read * 100 // sum(floor(size / 65536)) over the disks,
            a line whenever it changes (from 0: no "progress 0%" line, as
            the deployed tool prints; none at all when the sum is 0)
  bytes   = clusters read * 65536; duration normalized to "N"
  totals  = n = clusters * 65536; zb = 4096 per zero block of a partly
            stored cluster that begins inside its device (padding past
            the end is not counted); sparse z = 65536 per mask-0 cluster
            + zb; the reduction is zb / (n - z), as the deployed tool
            prints them

Usage: gen_progress.py <golden-dir> <out-dir> NAME...
"""
import struct
import sys


def analyse(path):
    d = open(path, 'rb').read()
    hs = struct.unpack('>I', d[56:60])[0]
    bo = struct.unpack('>I', d[48:52])[0]
    devs = []
    for i in range(1, 256):
        o = 4096 + 32 * i
        ptr = struct.unpack('>I', d[o:o + 4])[0]
        size = struct.unpack('>Q', d[o + 8:o + 16])[0]
        if size and ptr:
            n = struct.unpack('<H', d[bo + ptr:bo + ptr + 2])[0]
            devs.append((i, d[bo + ptr + 2:bo + ptr + 1 + n].decode(), size))
    off, clusters = hs, []
    while off < len(d):
        bc = struct.unpack('>H', d[off + 6:off + 8])[0]
        for i in range(59):
            v = struct.unpack('>Q', d[off + 40 + 8 * i:off + 48 + 8 * i])[0]
            if (v >> 32) & 0xff:
                clusters.append((v >> 48, (v >> 32) & 0xff, v & 0xffffffff))
        off += 512 + 4096 * bc
    return devs, clusters


def lines(devs, masks):
    out, last, z, zb = [], 0, 0, 0
    total = sum(s // 65536 for (_, name, s) in devs if name != 'vmstate')
    sizes = {i: s for (i, _, s) in devs}
    for i, (m, dev, num) in enumerate(masks, 1):
        if m == 0:
            z += 65536
        else:
            zb += 4096 * sum(1 for b in range(16) if not m & (1 << b) and
                             num * 65536 + b * 4096 < sizes[dev])
        if total:
            p = i * 100 // total
            if p != last:
                out.append('progress %d%% (read %d bytes, duration N sec)' % (p, i * 65536))
                last = p
    n = len(masks) * 65536
    z += zb
    if n == 0:
        out.append('vma archive contains no image data')
    else:
        out.append('total bytes read %d, sparse bytes %d (%s%%)' % (n, z, '%.3g' % (z * 100 / n)))
        if n - z:
            out.append('space reduction due to 4K zero blocks %s%%' % ('%.3g' % (zb * 100 / (n - z))))
    return out


if __name__ == '__main__':
    golden, outdir = sys.argv[1], sys.argv[2]
    for name in sys.argv[3:]:
        devs, masks = analyse('%s/%s.vma' % (golden, name))
        with open('%s/%s.progress' % (outdir, name), 'w') as f:
            f.write('\n'.join(lines(devs, masks)) + '\n')
