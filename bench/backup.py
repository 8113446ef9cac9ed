"""Live backup benchmark (bench/backup.sh runs it): vma backup of a running
QEMU (TCG, -S) against QEMU's own blockdev-backup sync=full of the same
disk into a local raw file, paired run by run in this script.

Prints, with the load average:
- time ratio: QEMU's job / vma backup (floor 0.8), medians of the runs;
  both sides end durable (QEMU's target and vma's archive are fsync'd:
  vma backup fsyncs before it names the archive), and the figures
  without QEMU's fsync are printed too;
- vma's peak RSS (floor: at most 128 MiB);
- fleecing space: the peak use of a tmpfs fleecing dir while the test
  overwrites W bytes of not-yet-copied disk during a backup (floor: at
  most W plus 2 MiB of qcow2 metadata).
--check exits 1 when a floor is missed.
SPDX-License-Identifier: MIT
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "backup"))
import qmp  # noqa: E402

MiB = 1 << 20


def make_disk(path, size, chunk=64 * MiB):
    """Half data: random 64 MiB chunks and holes in turn."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 2 * chunk):
            f.seek(off)
            f.write(os.urandom(min(chunk, size - off)))
        f.flush()
        os.fsync(f.fileno())


def disk_node(mon):
    for b in mon.cmd("query-block"):
        if b.get("device") == "drive-scsi0":
            return b["inserted"]["node-name"]
    raise SystemExit("bench: no drive-scsi0 in query-block")


def wait_jobs_gone(mon, job):
    while any(j["device"] == job for j in mon.cmd("query-block-jobs")):
        time.sleep(0.005)
    for e in mon.events:
        if e["event"] == "BLOCK_JOB_COMPLETED" and e["data"].get("device") == job \
                and e["data"].get("error"):
            raise SystemExit("bench: QEMU's backup failed: " + e["data"]["error"])
    mon.events.clear()


def qemu_backup(mon, node, target, size):
    """QEMU's own full backup into a new sparse raw file; seconds to the
    job's end, and with the target fsync'd."""
    with open(target, "wb") as f:
        f.truncate(size)
    mon.cmd("blockdev-add", driver="file", **{"node-name": "benchtgt", "filename": target})
    t0 = time.monotonic()
    mon.cmd("blockdev-backup", device=node, target="benchtgt", sync="full",
            **{"job-id": "benchjob"})
    wait_jobs_gone(mon, "benchjob")
    t1 = time.monotonic()
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    t2 = time.monotonic()
    mon.cmd("blockdev-del", **{"node-name": "benchtgt"})
    os.unlink(target)
    return t1 - t0, t2 - t0


def vma_backup(vma, qmp_path, fleece, archive):
    """vma backup into a file: wall seconds and peak RSS (KiB)."""
    out = archive + ".time"
    t0 = time.monotonic()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out, vma, "backup", "--qmp", qmp_path,
                    "--no-progress", "--fleecing-dir", fleece, archive], check=True)
    t1 = time.monotonic()
    with open(out) as f:
        rss = int(f.read().split()[-1])
    os.unlink(out)
    os.unlink(archive)
    return t1 - t0, rss


def used(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def fleecing_run(vma, q, fleece, size, written):
    """A backup stalled on a pipe while the test overwrites `written` bytes
    at the disk's end (not copied yet): the fleecing dir's peak use."""
    base = used(fleece)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], used(fleece))
            time.sleep(0.01)

    t = threading.Thread(target=sample)
    t.start()
    p = subprocess.Popen([vma, "backup", "--qmp", q.qmp_path, "--no-progress",
                          "--fleecing-dir", fleece, "-"], stdout=subprocess.PIPE)
    try:
        while not any(j["device"].startswith("vma-backup-") for j in q.mon.cmd("query-block-jobs")):
            if p.poll() is not None:
                raise SystemExit("bench: vma backup ended before its job appeared")
            time.sleep(0.005)
        step = 4 * MiB
        for off in range(size - written, size, step):
            q.mon.hmp('qemu-io drive-scsi0 "write -P 0x5a %d %d"' % (off, step))
        while p.stdout.read(1 << 20):
            pass
    finally:
        rc = p.wait()
        stop.set()
        t.join()
    if rc != 0:
        raise SystemExit("bench: vma backup failed in the fleecing run")
    return peak[0] - base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vma")
    ap.add_argument("--size", type=int, default=4096, help="disk size in MiB (default 4096)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    size = a.size * MiB
    work = tempfile.mkdtemp(prefix="vma-bench-backup-", dir=os.environ.get("TMPDIR", "/tmp"))
    fleece = os.path.join(work, "fleece")
    os.mkdir(fleece)
    mounted = False
    try:
        written = min(256 * MiB, size // 4)
        if os.geteuid() == 0:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % (written * 4), "bench",
                            fleece], check=True)
            mounted = True
        disk = os.path.join(work, "disk.raw")
        print("bench: making a %d MiB disk, half data" % a.size, flush=True)
        make_disk(disk, size)
        with qmp.Qemu(work, ["-drive", "if=none,id=drive-scsi0,file=%s,format=raw" % disk,
                             "-device", "virtio-scsi-pci,id=scsihw0",
                             "-device", "scsi-hd,drive=drive-scsi0,id=scsi0", "-S"]) as q:
            node = disk_node(q.mon)
            subprocess.run(["cat", disk], stdout=subprocess.DEVNULL, check=True)  # warm
            qt, qtf, vt, rss = [], [], [], []
            for i in range(a.runs + 1):  # the first pair is a warm-up
                t_job, t_sync = qemu_backup(q.mon, node, os.path.join(work, "qemu.raw"), size)
                t_vma, r = vma_backup(a.vma, q.qmp_path, fleece, os.path.join(work, "b.vma"))
                if i == 0:
                    continue
                qt.append(t_job)
                qtf.append(t_sync)
                vt.append(t_vma)
                rss.append(r)
                print("  run %d: QEMU %.2f s (%.2f s with fsync), vma %.2f s, vma peak RSS "
                      "%d MiB" % (i, t_job, t_sync, t_vma, r // 1024), flush=True)
            ratios = [b / v for b, v in zip(qtf, vt)]
            fl = fleecing_run(a.vma, q, fleece, size, written) if mounted else None
        ratio = statistics.median(ratios)
        peak = max(rss) // 1024
        print("load average: %s" % open("/proc/loadavg").read().split(" ", 3)[:3])
        print("%-52s %8s %8s" % ("measure", "value", "floor"))
        print("%-52s %8.2f %8s" % ("QEMU blockdev-backup (+fsync) / vma backup, median", ratio,
                                   ">= 0.8"))
        print("%-52s %8.2f %8s" % ("  the same without QEMU's fsync", statistics.median(
            [b / v for b, v in zip(qt, vt)]), "(info)"))
        print("%-52s %8d %8s" % ("vma peak RSS, MiB", peak, "<= 128"))
        ok = ratio >= 0.8 and peak <= 128
        if fl is not None:
            print("%-52s %8.1f %8s" % ("fleecing space used, MiB (guest wrote %d MiB)"
                                       % (written // MiB), fl / MiB, "<= %d" % (written // MiB + 2)))
            ok = ok and fl <= written + 2 * MiB
        else:
            print("fleecing space: not measured (needs root for a tmpfs)")
        if a.check and not ok:
            print("bench: a floor was missed")
            return 1
        return 0
    finally:
        if mounted:
            subprocess.run(["umount", fleece])
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
