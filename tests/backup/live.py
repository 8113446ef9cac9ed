#!/usr/bin/python3
"""`vma backup` against Debian's real qemu-system-x86_64 (TCG, -S).

The VM of most cases: a Proxmox-style `-drive if=none,id=drive-scsi0` qcow2
disk on a scsi-hd (64 MiB, holes in it), a `-blockdev` raw disk with no
backend name on a virtio-blk-pci with id virtio1 (64 MiB + 12345 bytes: not a
multiple of 64 KiB nor of 512), and an empty CD-ROM. Every 512-byte sector
of data says which disk and offset it is.

A backup is held "in the middle" without sleeps: vma writes the archive to
a pipe the test does not read yet, and blocks once the pipe and its buffers
are full (128 MiB of data: it cannot have read everything). The test waits
until `vma-backup-*` jobs show on its own QMP monitor (the transaction has
happened) and the pipe is full (FIONREAD), writes 0xa5 to the disks through
the devices' own backends (HMP qemu-io; its output lands in QEMU's log), or
sends a signal, or kills QEMU, and only then drains the pipe. A backup to a
file is held with --qga and a stand-in guest agent (FakeAgent) that keeps
its answer to guest-fsfreeze-freeze or -thaw until the test lets it go.

Checked after each case: exit status and exactly one `vma: ...` line on
failure; the archive's disks equal the content before the transaction
(extracted, byte for byte; the size is rounded up to 512 and the tail is
zero); the guest writes are on the live disks (and nothing else changed
there); QEMU's block jobs, jobs, block nodes (with their dirty bitmaps),
block exports, listening sockets (the NBD server), query-block and
query-status are as before; the fleecing dir, the archive's dir and vma's
TMPDIR hold nothing else afterwards.

Usage: live.py <vma> [<case-substring>...]   (no substrings: every case)
Needs qemu-system-x86, qemu-utils; root for the tmpfs cases (skipped, with
a note, otherwise). Exit 0 all passed, 1 a check failed, 77 a tool missing.
SPDX-License-Identifier: MIT
"""
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, QMPError, Qemu  # noqa: E402

MiB = 1024 * 1024
PREFIX = "vma-backup-"
F_GETPIPE_SZ = 1032  # Linux, <fcntl.h>
GUARD = 300  # seconds: a hang guard, never an assertion about speed

# The disks of the standard VM.
SCSI0_SIZE = 64 * MiB
VIRTIO1_FILE_SIZE = 64 * MiB + 12345            # the raw file
VIRTIO1_SIZE = (VIRTIO1_FILE_SIZE + 511) // 512 * 512  # QEMU's virtual size
VIRTIO1_QDEV = "/machine/peripheral/virtio1/virtio-backend"

# Guest writes while a backup is held: (offset, length), 0xa5 each.
# The first MiB, the last MiB, and a hole of scsi0.
WRITES = {
    "drive-scsi0": [(0, MiB), (SCSI0_SIZE - MiB, MiB), (50 * MiB, 64 * 1024)],
    "drive-virtio1": [(0, MiB), (VIRTIO1_FILE_SIZE // 512 * 512 - MiB, MiB),
                      (36 * MiB + 4096, 8192)],
}
# The HMP qemu-io target of each disk: the device's own backend.
QEMU_IO_TARGET = {"drive-scsi0": "drive-scsi0", "drive-virtio1": "-d " + VIRTIO1_QDEV}


class CaseFailed(Exception):
    """A check that makes the rest of the case meaningless."""


class Env:
    def __init__(self, vma, top):
        self.vma = vma
        self.top = top
        self.fails = []
        self.checks = 0
        self.case = ""
        self.qemus = []
        self.procs = []
        self.mounts = []
        self.root = os.geteuid() == 0
        self.skipped = []

    # --- bookkeeping -----------------------------------------------------

    def check(self, cond, what):
        self.checks += 1
        if not cond:
            self.fails.append("[%s] %s" % (self.case, what))
            print("  FAIL: " + what, flush=True)
        return cond

    def require(self, cond, what):
        if not self.check(cond, what):
            raise CaseFailed(what)

    def casedir(self, name):
        d = os.path.join(self.top, name)
        os.makedirs(d)
        return d

    def mount_tmpfs(self, path, size):
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % size, "tmpfs", path],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.mounts.append(path)

    def umount(self, path):
        if path in self.mounts:
            if subprocess.run(["umount", path], stderr=subprocess.DEVNULL).returncode != 0:
                subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)
            self.mounts.remove(path)

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for q in self.qemus:
            try:
                q.kill()
            except Exception:
                pass
        for m in list(self.mounts):
            self.umount(m)


E = None  # the Env of the run


# --- data ------------------------------------------------------------------

def pattern(tag, start, length):
    """Sectors that say which disk (tag) and byte offset they are."""
    assert start % 512 == 0
    out = bytearray(length + 512)
    fill = bytes([(tag * 37 + 11) & 0xff]) * 496
    for i in range(0, length, 512):
        out[i:i + 512] = struct.pack("<8sQ", b"VMALIVE" + bytes([tag]), start + i) + fill
    return bytes(out[:length])


def write_pattern(path, tag, ranges):
    with open(path, "r+b") as f:
        for start, length in ranges:
            for off in range(start, start + length, MiB):
                n = min(MiB, start + length - off)
                f.seek(off)
                f.write(pattern(tag, off, n))


def make_templates(d):
    """The two data disks, once; cases copy them. Returns the paths of the
    images and of their expected content (raw)."""
    t = {}
    raw0 = os.path.join(d, "scsi0.src.raw")
    with open(raw0, "wb") as f:
        f.truncate(SCSI0_SIZE)
    write_pattern(raw0, 1, [(0, 48 * MiB), (56 * MiB, 8 * MiB)])  # hole at 48..56 MiB
    t["scsi0"] = os.path.join(d, "scsi0.qcow2")
    run_ok(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw0, t["scsi0"]])
    os.unlink(raw0)
    # The expected content, as the brief says: qemu-img convert of the qcow2.
    t["scsi0.expect"] = os.path.join(d, "scsi0.expect.raw")
    run_ok(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", t["scsi0"], t["scsi0.expect"]])
    t["virtio1"] = os.path.join(d, "virtio1.raw")
    with open(t["virtio1"], "wb") as f:
        f.truncate(VIRTIO1_FILE_SIZE)
    write_pattern(t["virtio1"], 2, [(0, 32 * MiB), (40 * MiB, VIRTIO1_FILE_SIZE - 40 * MiB)])
    t["virtio1.expect"] = t["virtio1"]
    return t


def run_ok(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        raise CaseFailed("%s: exit %d: %s" % (" ".join(cmd), r.returncode,
                                                r.stderr.decode(errors="replace").strip()[:500]))
    return r.stdout.decode(errors="replace")


def first_difference(path, expect_path, size, writes=()):
    """None if the first `size` bytes of path equal expect_path's (zero
    past its end) with `writes` (offset, length) overlaid as 0xa5, and the
    rest of path (if any) is zero; else a description."""
    chunk = MiB
    with open(path, "rb") as a, open(expect_path, "rb") as b:
        total = os.fstat(a.fileno()).st_size
        off = 0
        while off < total:
            x = a.read(chunk)
            if not x:
                return "short read at %d" % off
            if off < size:
                y = b.read(len(x))
                y = y + bytes(len(x) - len(y))
                if off + len(x) > size:
                    y = y[:size - off] + bytes(off + len(x) - size)
                ya = bytearray(y)
                for wo, wl in writes:
                    lo, hi = max(wo, off), min(wo + wl, off + len(x))
                    if lo < hi:
                        ya[lo - off:hi - off] = b"\xa5" * (hi - lo)
                y = bytes(ya)
            else:
                y = bytes(len(x))
            if x != y:
                for i in range(len(x)):
                    if x[i] != y[i]:
                        return "byte %d is 0x%02x, expected 0x%02x" % (off + i, x[i], y[i])
            off += len(x)
    return None


# --- QEMU --------------------------------------------------------------------

def vm_args(d, t, extra=()):
    """The standard VM on copies of the templates, in d."""
    scsi0 = os.path.join(d, "scsi0.qcow2")
    virtio1 = os.path.join(d, "virtio1.raw")
    shutil.copyfile(t["scsi0"], scsi0)
    shutil.copyfile(t["virtio1"], virtio1)
    return ["-S", "-m", "64",
            "-device", "virtio-scsi-pci,id=scsihw0",
            "-drive", "if=none,id=drive-scsi0,file=%s,format=qcow2,cache=writeback,discard=on" % scsi0,
            "-device", "scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0",
            "-blockdev", "driver=raw,node-name=disk1,file.driver=file,file.filename=%s" % virtio1,
            "-device", "virtio-blk-pci,id=virtio1,drive=disk1",
            "-drive", "if=none,id=drive-ide2,media=cdrom",
            "-device", "ide-cd,bus=ide.1,unit=0,drive=drive-ide2,id=ide2"] + list(extra)


def start_qemu(d, args, name="vm"):
    q = Qemu(d, args, name=name)
    E.qemus.append(q)
    return q


def listening_sockets(pid):
    """The unix socket paths and TCP ports the process listens on."""
    inodes = set()
    fddir = "/proc/%d/fd" % pid
    for fd in os.listdir(fddir):
        try:
            link = os.readlink(os.path.join(fddir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            p = line.split()
            # Flags 00010000 = __SO_ACCEPTCON: a listening socket.
            if len(p) >= 7 and p[6] in inodes and int(p[3], 16) & 0x10000:
                out.append("unix:" + (p[7] if len(p) > 7 else "?"))
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[3] == "0A" and p[9] in inodes:
                        out.append("tcp:" + p[1])
        except OSError:
            pass
    return sorted(out)


def qemu_state(q):
    """What vma must leave as it found it."""
    m = q.mon
    nodes = []
    for n in m.cmd("query-named-block-nodes"):
        nodes.append((n.get("node-name"), n.get("drv"), n.get("file"), n.get("ro"),
                      tuple(sorted(b.get("name", "") for b in n.get("dirty-bitmaps", [])))))
    block = []
    for b in m.cmd("query-block"):
        ins = b.get("inserted") or {}
        block.append((b.get("device"), b.get("qdev"), ins.get("node-name"), ins.get("ro"),
                      b.get("locked"), b.get("tray_open")))
    return {
        "query-block-jobs": m.cmd("query-block-jobs"),
        "query-jobs": m.cmd("query-jobs"),
        "query-named-block-nodes": sorted(nodes, key=repr),
        "query-block-exports": m.cmd("query-block-exports"),
        "listening sockets (NBD server)": listening_sockets(q.proc.pid),
        "query-block": block,
        "query-status": m.cmd("query-status"),
    }


def check_state(q, before, when="afterwards"):
    after = qemu_state(q)
    for k in before:
        E.check(after[k] == before[k], "%s %s: %s, before: %s"
                % (k, when, json.dumps(after[k])[:700], json.dumps(before[k])[:700]))


def vma_objects(q):
    """The vma-backup-* jobs, nodes and exports QEMU has."""
    m = q.mon
    return {
        "jobs": sorted(j["device"] for j in m.cmd("query-block-jobs") if j["device"].startswith(PREFIX)),
        "nodes": sorted(n["node-name"] for n in m.cmd("query-named-block-nodes")
                        if (n.get("node-name") or "").startswith(PREFIX)),
        "exports": sorted(x["id"] for x in m.cmd("query-block-exports") if x["id"].startswith(PREFIX)),
    }


class GuestIO:
    """HMP qemu-io on the devices' own backends; its output goes to QEMU's
    stdout (the log), so each command's result is read from there."""

    def __init__(self, q):
        self.q = q
        self.pos = os.path.getsize(q.log_path)

    def _new_log(self):
        with open(self.q.log_path, "rb") as f:
            f.seek(self.pos)
            text = f.read().decode(errors="replace")
            self.pos = f.tell()
        return text

    def run(self, disk, cmd):
        """One qemu-io command; returns (hmp reply, log text)."""
        r = self.q.mon.hmp('qemu-io %s "%s"' % (QEMU_IO_TARGET[disk], cmd))
        return r, self._new_log()

    def write(self, disk, off, length):
        r, log = self.run(disk, "write -P 0xa5 %d %d" % (off, length))
        ok = r.strip() == "" and ("wrote %d/%d bytes" % (length, length)) in log and "failed" not in log
        E.check(ok, "guest write %s at %d+%d: hmp %r, log %r" % (disk, off, length, r, log.strip()))
        return ok

    def flush(self, disk):
        r, log = self.run(disk, "flush")
        E.check(r.strip() == "" and "failed" not in log, "flush %s: %r %r" % (disk, r, log))


# --- running vma -----------------------------------------------------------------

class Vma:
    """One `vma backup` run. out is "-" (a pipe the test drains later) or a
    path. TMPDIR is the case's tmp dir."""

    def __init__(self, d, args, out="-", tmpdir=None):
        self.d = d
        self.err_path = os.path.join(d, "vma.err.%d" % len(os.listdir(d)))
        self.stream_path = os.path.join(d, "stream.vma")
        env = dict(os.environ, LC_ALL="C")
        if tmpdir:
            env["TMPDIR"] = tmpdir
        self.cmd = [E.vma, "backup"] + list(args) + [out]
        self.err = open(self.err_path, "wb")
        self.rfd = None
        if out == "-":
            r, w = os.pipe()
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=w,
                                         stderr=self.err, env=env)
            os.close(w)
            self.rfd = r
        else:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self.err, env=env)
        E.procs.append(self.proc)
        self.drainer = None

    def wait_transaction(self, q):
        """Until vma-backup-* block jobs show on the test's monitor."""
        end = time.monotonic() + GUARD
        while time.monotonic() < end:
            jobs = [j["device"] for j in q.mon.cmd("query-block-jobs")]
            if any(j.startswith(PREFIX) for j in jobs):
                return jobs
            if self.proc.poll() is not None:
                raise CaseFailed("vma exited (%d) before its block jobs appeared: %s"
                                 % (self.proc.returncode, self.stderr()))
            time.sleep(0.01)
        raise CaseFailed("no vma-backup-* block job appeared within %d s" % GUARD)

    def wait_held(self, q):
        """Until the transaction has happened and vma has filled the pipe
        (it blocks in write then: the backup is in the middle)."""
        jobs = self.wait_transaction(q)
        size = fcntl.fcntl(self.rfd, F_GETPIPE_SZ)
        buf = bytearray(4)
        end = time.monotonic() + GUARD
        while time.monotonic() < end:
            fcntl.ioctl(self.rfd, termios.FIONREAD, buf)
            if struct.unpack("i", bytes(buf))[0] >= size - 4096:
                return jobs
            if self.proc.poll() is not None:
                raise CaseFailed("vma exited (%d) before it filled the pipe: %s"
                                 % (self.proc.returncode, self.stderr()))
            time.sleep(0.01)
        raise CaseFailed("vma did not fill the pipe within %d s" % GUARD)

    def release(self):
        """Start draining the pipe into stream.vma."""
        def drain(fd, path):
            with open(path, "wb") as f:
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        break
                    f.write(b)
            os.close(fd)
        self.drainer = threading.Thread(target=drain, args=(self.rfd, self.stream_path))
        self.drainer.start()

    def finish(self):
        """Waits for the exit; returns the exit status."""
        if self.rfd is not None and self.drainer is None:
            self.release()
        try:
            rc = self.proc.wait(timeout=GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise CaseFailed("vma did not exit within %d s (killed): %s" % (GUARD, self.stderr()))
        if self.drainer:
            self.drainer.join()
        self.err.close()
        return rc

    def stderr(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")


def run_vma(d, args, tmpdir=None):
    """A vma command to its end: (rc, stdout, stderr)."""
    env = dict(os.environ, LC_ALL="C")
    if tmpdir:
        env["TMPDIR"] = tmpdir
    p = subprocess.Popen([E.vma] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    E.procs.append(p)
    try:
        out, err = p.communicate(timeout=GUARD)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise CaseFailed("vma %s did not exit within %d s" % (" ".join(args), GUARD))
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def expect_success(rc, err, what="vma backup"):
    E.check(rc == 0, "%s: exit %d, expected 0; stderr: %r" % (what, rc, err[:1000]))
    E.check(err == "", "%s: stderr not empty: %r" % (what, err[:1000]))


def expect_failure(rc, err, must_contain=(), what="vma backup"):
    """Exit 2 and exactly one line `vma: ...` that contains each of
    must_contain (case-insensitive alternatives: a tuple of str or of
    tuples). Returns the line."""
    lines = err.splitlines()
    E.check(rc == 2, "%s: exit %d, expected 2; stderr: %r" % (what, rc, err[:1000]))
    E.check(len(lines) == 1 and lines[0].startswith("vma: ") and err.endswith("\n"),
            "%s: stderr is not exactly one 'vma: ...' line: %r" % (what, err[:1000]))
    line = lines[-1] if lines else ""
    print("  %s: exit %d: %s" % (what, rc, line))
    # Words are looked for outside the test's own paths (a case's dir name
    # must not answer for vma); paths are looked for as they are.
    bare = line.replace(E.top, "<T>").lower()
    for want in must_contain:
        alts = want if isinstance(want, tuple) else (want,)
        E.check(any((a in line) if a.startswith("/") else (a.lower() in bare) for a in alts),
                "%s: the line %r does not say %s" % (what, line, " or ".join(repr(a) for a in alts)))
    return line


def dir_is(path, names, what):
    got = sorted(os.listdir(path))
    E.check(got == sorted(names), "%s %s holds %s, expected %s" % (what, path, got, sorted(names)))


def archive_list(path):
    rc, out, err = run_vma(E.top, ["list", path])
    E.check(rc == 0, "vma list %s: exit %d: %r" % (path, rc, err))
    return out


def check_dev_lines(list_out, expect):
    """expect: {name: size}. The DEV lines name exactly these, dev_ids 1..n."""
    devs = {}
    ids = []
    for line in list_out.splitlines():
        if line.startswith("DEV: "):
            p = line.split()
            # DEV: dev_id=<id> size: <bytes> devname: <name>
            if len(p) == 6 and p[1].startswith("dev_id=") and p[2] == "size:" and p[4] == "devname:":
                devs[p[5]] = int(p[3])
                ids.append(int(p[1][7:]))
            else:
                E.check(False, "vma list: a DEV line of an unexpected form: %r" % line)
    E.check(devs == expect, "vma list: devices %s, expected %s; output:\n%s" % (devs, expect, list_out))
    E.check(sorted(ids) == list(range(1, len(ids) + 1)), "vma list: dev_ids %s" % ids)


def check_archive(d, archive, expect, t):
    """verify, list and extract; compare each disk with its content at the
    transaction instant. expect: {name: size}."""
    rc, out, err = run_vma(d, ["verify", archive])
    E.check(rc == 0, "vma verify %s: exit %d: %r" % (archive, rc, err))
    check_dev_lines(archive_list(archive), expect)
    x = os.path.join(d, "extract")
    rc, out, err = run_vma(d, ["extract", archive, x])
    if not E.check(rc == 0, "vma extract: exit %d: %r" % (rc, err)):
        return
    E.check(sorted(os.listdir(x)) == sorted(["disk-%s.raw" % n for n in expect]) or
            set("disk-%s.raw" % n for n in expect) <= set(os.listdir(x)),
            "extracted files: %s" % os.listdir(x))
    src = {"drive-scsi0": (t["scsi0.expect"], SCSI0_SIZE),
           "drive-virtio1": (t["virtio1.expect"], VIRTIO1_FILE_SIZE)}
    for name, size in expect.items():
        p = os.path.join(x, "disk-%s.raw" % name)
        if not E.check(os.path.exists(p), "no %s" % p):
            continue
        E.check(os.path.getsize(p) == size, "%s is %d bytes, expected %d" % (p, os.path.getsize(p), size))
        if name in src:
            diff = first_difference(p, src[name][0], src[name][1])
            E.check(diff is None, "the archive's %s differs from the disk at the transaction: %s"
                    % (name, diff))
    shutil.rmtree(x)


def check_live(q, d, t, writes):
    """The live disks hold their old content with `writes` on top."""
    gio = GuestIO(q)
    for disk in ("drive-scsi0", "drive-virtio1"):
        gio.flush(disk)
    live0 = os.path.join(d, "live-scsi0.raw")
    run_ok(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", os.path.join(d, "scsi0.qcow2"), live0])
    diff = first_difference(live0, t["scsi0.expect"], SCSI0_SIZE, writes.get("drive-scsi0", ()))
    E.check(diff is None, "the live drive-scsi0 after the backup: %s" % diff)
    os.unlink(live0)
    diff = first_difference(os.path.join(d, "virtio1.raw"), t["virtio1.expect"], VIRTIO1_FILE_SIZE,
                            writes.get("drive-virtio1", ()))
    E.check(diff is None, "the live drive-virtio1 after the backup: %s" % diff)
    # The same through qemu-io, as an outside reader sees it.
    for disk, img, fmt in (("drive-scsi0", "scsi0.qcow2", "qcow2"), ("drive-virtio1", "virtio1.raw", "raw")):
        for off, length in writes.get(disk, ()):
            r = subprocess.run(["qemu-io", "-r", "-U", "-f", fmt, "-c",
                                "read -P 0xa5 %d %d" % (off, length), os.path.join(d, img)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out = r.stdout.decode(errors="replace")
            E.check(r.returncode == 0 and "Pattern verification failed" not in out
                    and "read %d/%d" % (length, length) in out,
                    "qemu-io read -P 0xa5 %d %d of the live %s: %s" % (off, length, disk, out.strip()))


def do_writes(q, writes=WRITES):
    gio = GuestIO(q)
    for disk, ws in writes.items():
        for off, length in ws:
            gio.write(disk, off, length)


def stream_does_not_verify(v):
    if not os.path.exists(v.stream_path):
        return
    rc, out, err = run_vma(v.d, ["verify", v.stream_path])
    E.check(rc != 0, "the output of a failed backup (%d bytes) verifies as a complete archive"
            % os.path.getsize(v.stream_path))


STD_DISKS = {"drive-scsi0": SCSI0_SIZE, "drive-virtio1": VIRTIO1_SIZE}


def root_for_tmpfs(case):
    """Whether the case can mount a tmpfs (root); says so when it cannot."""
    if E.root:
        return True
    E.skipped.append("%s (needs root for a tmpfs)" % case)
    print("  skipped: needs root to mount a tmpfs")
    return False


def case_dirs(name):
    d = E.casedir(name)
    fl = os.path.join(d, "fleece")
    tmp = os.path.join(d, "tmp")
    out = os.path.join(d, "out")
    for p in (fl, tmp, out):
        os.makedirs(p)
    return d, fl, tmp, out


def leftovers_none(fl, tmp, out=None, out_names=()):
    dir_is(fl, [], "the fleecing dir")
    dir_is(tmp, [], "vma's TMPDIR")
    if out is not None:
        dir_is(out, list(out_names), "the archive's dir")


# --- cases -------------------------------------------------------------------------

def case_query_block(t):
    """The VM as vma sees it (what the lead asked to be told)."""
    d, fl, tmp, out = case_dirs("query-block")
    q = start_qemu(d, vm_args(d, t))
    bl = q.mon.cmd("query-block")
    for b in bl:
        ins = b.get("inserted") or {}
        print("  query-block: device=%r qdev=%r node-name=%r removable=%r ro=%r virtual-size=%r"
              % (b.get("device"), b.get("qdev"), ins.get("node-name"), b.get("removable"),
                 ins.get("ro"), (ins.get("image") or {}).get("virtual-size")))
    by = {b["qdev"]: b for b in bl}
    E.check(set(by) == {"scsi0", VIRTIO1_QDEV, "ide2"}, "qdevs: %s" % list(by))
    E.check(by["scsi0"]["device"] == "drive-scsi0" and by[VIRTIO1_QDEV]["device"] == ""
            and by["ide2"]["removable"] and "inserted" not in by["ide2"], "query-block: %s" % bl)
    E.check(by[VIRTIO1_QDEV]["inserted"]["image"]["virtual-size"] == VIRTIO1_SIZE,
            "virtio1's virtual size")
    q.kill()


def case_success_live_writes(t):
    d, fl, tmp, out = case_dirs("success")
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    v = Vma(d, ["--qmp", q.qmp_path, "--fleecing-dir", fl], tmpdir=tmp)
    jobs = v.wait_held(q)
    E.check(sorted(jobs) == sorted(j for j in jobs if j.startswith(PREFIX)) and len(jobs) == 2,
            "block jobs while the backup runs: %s (expected two vma-backup-* jobs)" % jobs)
    mid = vma_objects(q)
    print("  while held: %s" % mid)
    E.check(all(len(mid[k]) >= 1 for k in ("jobs", "nodes")),
            "vma-backup-* objects while held: %s" % mid)
    do_writes(q)
    # vma does not hold the QMP socket while it copies.
    try:
        c = QMP(q.qmp_path, timeout=60)
        c.close()
    except (OSError, QMPError) as e:
        E.check(False, "the QMP socket is not free while vma copies: %s" % e)
    E.check(v.proc.poll() is None, "vma still runs while held (it exited %s: %r)"
            % (v.proc.returncode, v.stderr()))
    rc = v.finish()
    expect_success(rc, v.stderr())
    check_archive(d, v.stream_path, STD_DISKS, t)
    check_live(q, d, t, WRITES)
    check_state(q, before)
    leftovers_none(fl, tmp)
    q.kill()


def qmrestore_handshake(d, arch, conf, t):
    """Restore the archive as Proxmox VE's qmrestore does: the disks from
    the config's #qmdump#map lines, new qcow2 volumes, `vma extract -v -r
    <fifo> - <tmpdir>` with the archive on stdin and the map lines PVE
    writes into the FIFO (throttling, format=, 0:, then "done"); each
    volume must hold the disk as it was at the transaction."""
    maps = [l.split(":") for l in conf.splitlines() if l.startswith("#qmdump#map:")]
    fifo = os.path.join(d, "restore.fifo")
    os.mkfifo(fifo)
    lines, vols = [], {}
    for m in maps:  # #qmdump#map:<key>:<devname>:<storeid>:<format>:
        devname, fmt = m[2], m[4] or "raw"
        size = {"drive-scsi0": SCSI0_SIZE, "drive-virtio1": VIRTIO1_SIZE}[devname]
        vol = os.path.join(d, "restored-%s.%s" % (m[1], fmt))
        run_ok(["qemu-img", "create", "-q", "-f", fmt, vol, str(size)])
        vols[devname] = (vol, fmt)
        lines.append("throttling.bps=1000000000:throttling.group=%s:format=%s:0:%s=%s"
                     % (m[3], fmt, devname, vol))
    E.check(sorted(vols) == ["drive-scsi0", "drive-virtio1"],
            "qemu-server.conf maps %s, expected both disks" % sorted(vols))
    with open(arch, "rb") as inp:
        p = subprocess.Popen([E.vma, "extract", "-v", "-r", fifo, "-",
                              os.path.join(d, "restore.tmp")],
                             stdin=inp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with open(fifo, "w") as f:
            f.write("\n".join(lines) + "\ndone\n")
        out, err = p.communicate(timeout=120)
    E.check(p.returncode == 0, "qmrestore handshake: vma extract -r: exit %d: %r"
            % (p.returncode, err.decode(errors="replace")[-500:]))
    E.check(out.decode().startswith("CFG: "), "qmrestore handshake: stdout does not start with "
            "the list lines: %r" % out[:200])
    src = {"drive-scsi0": (t["scsi0.expect"], SCSI0_SIZE),
           "drive-virtio1": (t["virtio1.expect"], VIRTIO1_FILE_SIZE)}
    for devname, (vol, fmt) in vols.items():
        raw = vol + ".raw"
        run_ok(["qemu-img", "convert", "-f", fmt, "-O", "raw", vol, raw])
        diff = first_difference(raw, src[devname][0], src[devname][1])
        E.check(diff is None, "qmrestore handshake: %s restored into %s differs: %s"
                % (devname, fmt, diff))
        os.unlink(raw)
        os.unlink(vol)
    os.unlink(fifo)


def case_file_config(t):
    d, fl, tmp, out = case_dirs("file-config")
    conf = os.path.join(d, "100.conf")
    kept = ("boot: order=scsi0\nmemory: 64\nscsi0: local:100/vm-100-disk-0.qcow2,size=64M\n"
            "virtio1: local:100/vm-100-disk-1.raw\nide2: none,media=cdrom\n")
    with open(conf, "w") as f:
        # vzdump's lock while it backs up: left out of the stored config.
        f.write("lock: backup\n" + kept)
    # qemu-server.conf is stored as vzdump stores it (cli/pve_config.h):
    # without lock:, with a #qmdump#map line per disk backed up.
    conf_expect = (kept + "#qmdump#map:scsi0:drive-scsi0:local:qcow2:\n"
                   "#qmdump#map:virtio1:drive-virtio1:local:raw:\n")
    fw = os.path.join(d, "fw.conf")
    with open(fw, "w") as f:
        f.write("[OPTIONS]\nenable: 1\n")
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    arch = os.path.join(out, "vzdump-qemu-100.vma")
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl,
                             "-c", "qemu-server.conf=" + conf, "-c", fw, arch], tmpdir=tmp)
    expect_success(rc, err)
    E.check(o == "", "stdout of a backup to a file: %r" % o[:300])
    leftovers_none(fl, tmp, out, ["vzdump-qemu-100.vma"])
    if os.path.exists(arch):
        check_archive(d, arch, STD_DISKS, t)
        lst = archive_list(arch)
        cfg = [l for l in lst.splitlines() if l.startswith("CFG: ")]
        E.check(sorted(cfg) == sorted(["CFG: size: %d name: qemu-server.conf" % len(conf_expect),
                                       "CFG: size: %d name: fw.conf" % os.path.getsize(fw)]),
                "vma list: CFG lines %s" % cfg)
        rc, o, err = run_vma(d, ["config", arch])
        E.check(rc == 0 and o == conf_expect, "vma config: exit %d, %r, expected %r" % (rc, o[:600], conf_expect))
        rc, o, err = run_vma(d, ["config", arch, "-c", "fw.conf"])
        E.check(rc == 0 and o == open(fw).read(), "vma config -c fw.conf: exit %d, %r" % (rc, o[:300]))
        qmrestore_handshake(d, arch, conf_expect, t)
    # An archive that exists is never overwritten.
    if os.path.exists(arch):
        with open(arch, "rb") as f:
            old = f.read()
        rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl, arch], tmpdir=tmp)
        expect_failure(rc, err, [arch], what="vma backup onto an existing archive")
        with open(arch, "rb") as f:
            E.check(f.read() == old, "vma backup onto an existing archive changed it")
        leftovers_none(fl, tmp, out, ["vzdump-qemu-100.vma"])
    check_live(q, d, t, {})
    check_state(q, before)
    q.kill()


def case_zstd(t):
    d, fl, tmp, out = case_dirs("zstd")
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    arch = os.path.join(out, "a.vma.zst")
    rc, o, err = run_vma(d, ["backup", "-v", "--qmp", q.qmp_path, "--fleecing-dir", fl,
                             "--compress=zstd", arch], tmpdir=tmp)
    E.check(rc == 0, "vma backup -v --compress=zstd: exit %d: %r" % (rc, err[-1000:]))
    lines = err.splitlines()
    print("  -v said (%d progress lines left out):\n" % sum(l.startswith("progress ") for l in lines)
          + "".join("    | %s\n" % l for l in lines if not l.startswith("progress ")), end="")
    leftovers_none(fl, tmp, out, ["a.vma.zst"])
    if os.path.exists(arch):
        with open(arch, "rb") as f:
            E.check(f.read(4) == b"\x28\xb5\x2f\xfd", "a.vma.zst does not start with zstd's magic")
        check_archive(d, arch, STD_DISKS, t)
    check_state(q, before)
    q.kill()


def case_select_one(t):
    """-d selects one disk; a block job on a disk not selected does not matter."""
    d, fl, tmp, out = case_dirs("select-one")
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    arch = os.path.join(out, "one.vma")
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl,
                             "-d", "drive-virtio1", arch], tmpdir=tmp)
    expect_success(rc, err)
    leftovers_none(fl, tmp, out, ["one.vma"])
    if os.path.exists(arch):
        check_archive(d, arch, {"drive-virtio1": VIRTIO1_SIZE}, t)
        os.unlink(arch)
    check_state(q, before)
    # A job of someone else on drive-scsi0, and -d drive-virtio1.
    add_foreign_job(q, d, "drive-scsi0")
    before = qemu_state(q)
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl,
                             "-d", "drive-virtio1", arch], tmpdir=tmp)
    expect_success(rc, err, "vma backup -d drive-virtio1 with a job on drive-scsi0")
    if os.path.exists(arch):
        check_dev_lines(archive_list(arch), {"drive-virtio1": VIRTIO1_SIZE})
        os.unlink(arch)
    check_state(q, before)
    leftovers_none(fl, tmp, out, [])
    q.kill()


def add_foreign_job(q, d, disk):
    """A sync=none backup job (test-job-*) of the test's own on a disk."""
    node = [b for b in q.mon.cmd("query-block")
            if b["device"] == disk or b["qdev"] == VIRTIO1_QDEV and disk == "drive-virtio1"][0]
    size = node["inserted"]["image"]["virtual-size"]
    node = node["inserted"]["node-name"]
    img = os.path.join(d, "foreign-%s.qcow2" % disk)
    run_ok(["qemu-img", "create", "-q", "-f", "qcow2", img, str(size)])
    q.mon.cmd("blockdev-add", **{"driver": "qcow2", "node-name": "test-target-" + disk,
                                 "file": {"driver": "file", "filename": img}, "backing": node})
    q.mon.cmd("blockdev-backup", **{"device": node, "target": "test-target-" + disk,
                                    "sync": "none", "job-id": "test-job-" + disk})


def held_backup(name, t, sig=None, kill_qemu=False, fleecing_tmpfs=None):
    """A backup held by the pipe, writes made, then sig to vma / QEMU killed
    / the fleecing tmpfs filled; returns (dirs, qemu, vma, before)."""
    d, fl, tmp, out = case_dirs(name)
    if fleecing_tmpfs:
        E.mount_tmpfs(fl, fleecing_tmpfs)
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    v = Vma(d, ["--qmp", q.qmp_path, "--fleecing-dir", fl], tmpdir=tmp)
    v.wait_held(q)
    return (d, fl, tmp, out), q, v, before


def case_signal(t, sig):
    name = {signal.SIGTERM: "sigterm", signal.SIGINT: "sigint"}[sig]
    (d, fl, tmp, out), q, v, before = held_backup(name, t)
    do_writes(q)
    E.check(v.proc.poll() is None, "vma still runs while held")
    v.proc.send_signal(sig)
    rc = v.finish()
    expect_failure(rc, v.stderr(), what="vma backup and %s" % name.upper())
    stream_does_not_verify(v)
    check_live(q, d, t, WRITES)
    check_state(q, before)
    leftovers_none(fl, tmp)
    q.kill()


def case_qemu_killed(t):
    (d, fl, tmp, out), q, v, before = held_backup("qemu-killed", t)
    do_writes(q)
    q.kill()
    rc = v.finish()
    expect_failure(rc, v.stderr(), what="vma backup when QEMU was killed")
    stream_does_not_verify(v)
    leftovers_none(fl, tmp)


def case_sigkill_cleanup(t):
    (d, fl, tmp, out), q, v, before = held_backup("sigkill-cleanup", t)
    do_writes(q)
    v.proc.send_signal(signal.SIGKILL)
    v.finish()
    left = vma_objects(q)
    print("  left by SIGKILL: %s; fleecing dir: %s; TMPDIR: %s"
          % (left, sorted(os.listdir(fl)), sorted(os.listdir(tmp))))
    E.check(left["jobs"] and left["nodes"], "a SIGKILL mid-backup left no vma-backup-* jobs/nodes: %s" % left)
    rc, o, err = run_vma(d, ["backup", "--cleanup", "--qmp", q.qmp_path], tmpdir=tmp)
    expect_success(rc, err, "vma backup --cleanup")
    E.check(vma_objects(q) == {"jobs": [], "nodes": [], "exports": []},
            "vma-backup-* objects after --cleanup: %s" % vma_objects(q))
    check_state(q, before, "after --cleanup")
    check_live(q, d, t, WRITES)
    # Its fleecing images are vma's files: --cleanup finds them through
    # their nodes and removes them (an interpretation; see the report).
    dir_is(fl, [], "the fleecing dir after --cleanup")
    # Nothing left: --cleanup again is a no-op.
    rc, o, err = run_vma(d, ["backup", "--cleanup", "--qmp", q.qmp_path], tmpdir=tmp)
    expect_success(rc, err, "vma backup --cleanup with nothing to clean")
    check_state(q, before, "after a second --cleanup")
    q.kill()


def case_fleecing_full(t):
    if not root_for_tmpfs("fleecing-full"):
        return
    size = 16 * MiB
    (d, fl, tmp, out), q, v, before = held_backup("fleecing-full", t, fleecing_tmpfs=size)
    # Writes to allocated data of drive-scsi0, 512 KiB each, while more than
    # 1 MiB is free: each must succeed (copy-before-write has room).
    gio = GuestIO(q)
    writes = []
    off = 2 * MiB
    while True:
        st = os.statvfs(fl)
        free = st.f_bavail * st.f_frsize
        if free < MiB or off >= 40 * MiB:
            break
        if not gio.write("drive-scsi0", off, 512 * 1024):
            break
        writes.append((off, 512 * 1024))
        off += 512 * 1024
    st = os.statvfs(fl)
    print("  %d KiB written through qemu-io; the %d MiB fleecing tmpfs has %d KiB free"
          % (sum(w[1] for w in writes) // 1024, size // MiB, st.f_bavail * st.f_frsize // 1024))
    # vma may already have stopped (a watcher of the fleecing dir), or
    # stop once it can write again.
    rc = v.finish()
    expect_failure(rc, v.stderr(), [fl], what="vma backup with a full fleecing dir")
    stream_does_not_verify(v)
    check_live(q, d, t, {"drive-scsi0": writes})
    check_state(q, before)
    leftovers_none(fl, tmp)
    q.kill()
    E.umount(fl)


def case_fleecing_full_at_start(t):
    if not root_for_tmpfs("fleecing-full-at-start"):
        return
    d, fl, tmp, out = case_dirs("fleecing-full-at-start")
    E.mount_tmpfs(fl, 16 * MiB)
    with open(os.path.join(fl, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\x5a" * 65536)
                f.flush()
        except OSError:
            pass
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    arch = os.path.join(out, "a.vma")
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl, arch], tmpdir=tmp)
    expect_failure(rc, err, [fl], what="vma backup with a full fleecing dir at the start")
    check_state(q, before)
    dir_is(fl, ["filler"], "the fleecing dir")
    dir_is(tmp, [], "vma's TMPDIR")
    dir_is(out, [], "the archive's dir")
    q.kill()
    E.umount(fl)


def case_archive_full(t):
    if not root_for_tmpfs("archive-full"):
        return
    d, fl, tmp, out = case_dirs("archive-full")
    E.mount_tmpfs(out, 8 * MiB)
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    arch = os.path.join(out, "a.vma")
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl, arch], tmpdir=tmp)
    expect_failure(rc, err, [("No space left", "ENOSPC", "full")],
                   what="vma backup into a full archive dir")
    check_state(q, before)
    check_live(q, d, t, {})
    leftovers_none(fl, tmp, out, [])
    q.kill()
    E.umount(out)


class FakeAgent:
    """A stand-in for qemu-guest-agent on a unix socket (no guest runs):
    line-delimited JSON, commands processed one at a time in arrival order
    across connections, as the agent does. hold(name) makes the next command
    of that name wait until release(); frozen says whether a freeze
    answered is not yet followed by a thaw."""

    def __init__(self, path):
        self.path = path
        self.frozen = False
        self.log = []            # names of the commands processed
        self.cond = threading.Condition()
        self.queue = []          # (conn, msg)
        self.holds = {}          # name -> threading.Event (set: go on)
        self.arrived = {}        # name -> threading.Event
        self.stopping = False
        self.busy = False
        self.conns = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.srv.settimeout(0.2)
        self.threads = [threading.Thread(target=self._accept), threading.Thread(target=self._process)]
        for th in self.threads:
            th.start()

    def hold(self, name):
        self.holds[name] = threading.Event()
        self.arrived[name] = threading.Event()

    def wait_arrived(self, name, proc):
        """Until a held command arrived (or vma exited)."""
        end = time.monotonic() + GUARD
        while not self.arrived[name].wait(0.05):
            if proc.poll() is not None:
                raise CaseFailed("vma exited (%d) before it sent %s" % (proc.returncode, name))
            if time.monotonic() > end:
                raise CaseFailed("vma did not send %s within %d s" % (name, GUARD))

    def release(self, name):
        self.holds[name].set()

    def wait_idle(self):
        """Until every command that came is processed."""
        end = time.monotonic() + GUARD
        with self.cond:
            while (self.queue or self.busy) and time.monotonic() < end:
                self.cond.wait(0.05)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            self.conns.append(c)
            # A new client while a command is held: the one that sent it
            # gave up waiting (a real agent would have answered long ago).
            for name, ev in self.holds.items():
                if self.arrived[name].is_set():
                    ev.set()
            th = threading.Thread(target=self._read, args=(c,))
            th.daemon = True
            th.start()

    def _read(self, c):
        buf = b""
        while True:
            try:
                chunk = c.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.replace(b"\xff", b"").strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                with self.cond:
                    self.queue.append((c, msg))
                    self.cond.notify()

    def _process(self):
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait(0.2)
                if self.stopping and not self.queue:
                    return
                c, msg = self.queue.pop(0)
                self.busy = True
            name = msg.get("execute", "")
            if name in self.holds and not self.holds[name].is_set():
                self.arrived[name].set()
                while not self.holds[name].wait(0.1):
                    if self.stopping:
                        return
            self.log.append(name)
            args = msg.get("arguments") or {}
            prefix = b""
            if name in ("guest-sync-delimited", "guest-sync"):
                ret = args.get("id")
                prefix = b"\xff" if name == "guest-sync-delimited" else b""
            elif name == "guest-fsfreeze-freeze":
                self.frozen = True
                ret = 2
            elif name == "guest-fsfreeze-thaw":
                ret = 2 if self.frozen else 0
                self.frozen = False
            elif name == "guest-fsfreeze-status":
                ret = "frozen" if self.frozen else "thawed"
            else:
                ret = {}
            try:
                c.sendall(prefix + json.dumps({"return": ret}).encode() + b"\n")
            except OSError:
                pass
            with self.cond:
                self.busy = False
                self.cond.notify_all()

    def close(self):
        self.stopping = True
        for e in self.holds.values():
            e.set()
        for th in self.threads:
            th.join()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.srv.close()


def agent_case(name, t, sig=None, at="guest-fsfreeze-thaw"):
    """A backup to a file with --qga (a fake agent). The freeze is held
    until the test saw no vma job yet; the thaw is held until the test saw
    the jobs (the transaction came while frozen) and wrote to the disks.
    sig: sent to vma while the command `at` is held."""
    d, fl, tmp, out = case_dirs(name)
    agent = FakeAgent(os.path.join(d, "qga.sock"))
    try:
        q = start_qemu(d, vm_args(d, t))
        before = qemu_state(q)
        arch = os.path.join(out, "vzdump.vma")
        agent.hold("guest-fsfreeze-freeze")
        if at != "guest-fsfreeze-freeze":
            agent.hold("guest-fsfreeze-thaw")
        v = Vma(d, ["--qmp", q.qmp_path, "--qga", agent.path, "--fleecing-dir", fl], out=arch, tmpdir=tmp)
        agent.wait_arrived("guest-fsfreeze-freeze", v.proc)
        E.check(vma_objects(q)["jobs"] == [], "vma-backup-* jobs before the freeze was answered: %s"
                % vma_objects(q))
        writes = {}
        if sig is not None and at == "guest-fsfreeze-freeze":
            v.proc.send_signal(sig)
            rc = v.finish()
            agent.release("guest-fsfreeze-freeze")
        else:
            agent.release("guest-fsfreeze-freeze")
            agent.wait_arrived("guest-fsfreeze-thaw", v.proc)
            E.check(vma_objects(q)["jobs"] != [], "no vma-backup-* job when the thaw came: "
                    "the transaction was not made while the guest was frozen")
            # The archive is not under its name before it is complete.
            inside = os.listdir(out)
            E.check(all(n.startswith(".") for n in inside),
                    "while the backup runs, the archive's dir holds %s (only a hidden name expected)" % inside)
            do_writes(q)
            writes = WRITES
            if sig is not None:
                v.proc.send_signal(sig)
                rc = v.finish()
                agent.release("guest-fsfreeze-thaw")
            else:
                agent.release("guest-fsfreeze-thaw")
                rc = v.finish()
        # Whatever happened, the agent gets its thaw (maybe after vma exited:
        # then vma sent it before, queued behind the held command).
        agent.wait_idle()
        print("  the agent processed: %s" % " ".join(agent.log))
        E.check(not agent.frozen, "the guest's file systems were left frozen (agent log: %s)" % agent.log)
        if sig is None:
            expect_success(rc, v.stderr())
            leftovers_none(fl, tmp, out, ["vzdump.vma"])
            if os.path.exists(arch):
                check_archive(d, arch, STD_DISKS, t)
        else:
            expect_failure(rc, v.stderr(), what="vma backup --qga and signal %d" % sig)
            leftovers_none(fl, tmp, out, [])
        check_live(q, d, t, writes)
        check_state(q, before)
        q.kill()
    finally:
        agent.close()


def case_nbd_server_running(t):
    """An NBD server of someone else (a migration, say) runs with an export
    of its own: vma either backs up or refuses with one line; either way the
    server and its export are as before."""
    d, fl, tmp, out = case_dirs("nbd-running")
    q = start_qemu(d, vm_args(d, t))
    sock = os.path.join(d, "their-nbd.sock")
    q.mon.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    q.mon.cmd("blockdev-add", **{"driver": "null-co", "node-name": "their-node", "size": MiB})
    q.mon.execute("block-export-add", {"type": "nbd", "id": "their-export", "node-name": "their-node",
                                       "name": "their-export", "writable": False})
    before = qemu_state(q)
    E.check(("unix:" + sock) in before["listening sockets (NBD server)"],
            "the test's NBD server does not show as listening: %s" % before)
    arch = os.path.join(out, "a.vma")
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl, arch], tmpdir=tmp)
    if rc == 0:
        print("  vma backed up beside the running NBD server")
        expect_success(rc, err)
        leftovers_none(fl, tmp, out, ["a.vma"])
        if os.path.exists(arch):
            check_archive(d, arch, STD_DISKS, t)
    else:
        expect_failure(rc, err, what="vma backup with an NBD server running")
        leftovers_none(fl, tmp, out, [])
    check_state(q, before)
    r = subprocess.run(["qemu-img", "info", "--output=json",
                        "nbd+unix:///their-export?socket=" + sock], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    E.check(r.returncode == 0 and b'"virtual-size": 1048576' in r.stdout,
            "the test's NBD export after the backup: %s" % (r.stdout + r.stderr).decode(errors="replace"))
    q.kill()


def case_concurrent(t):
    """A second vma backup while one is held fails with one line and leaves
    the first alone; the first then completes."""
    (d, fl, tmp, out), q, v, before = held_backup("concurrent", t)
    do_writes(q)
    fl2, tmp2, out2 = (os.path.join(d, x) for x in ("fleece2", "tmp2", "out2"))
    for p in (fl2, tmp2, out2):
        os.makedirs(p)
    # The first stays held until the second has ended. (A second that
    # makes QEMU drain the disks, e.g. by a transaction, hangs QEMU's
    # monitor until the first reads its NBD replies again; it then ends on
    # its own QMP timeout.)
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl2,
                             os.path.join(out2, "b.vma")], tmpdir=tmp2)
    expect_failure(rc, err, what="a second vma backup while one runs")
    E.check(v.proc.poll() is None, "the first vma exited (%s) while the second ran: %r"
            % (v.proc.returncode, v.stderr()))
    rc = v.finish()
    leftovers_none(fl2, tmp2, out2, [])
    expect_success(rc, v.stderr(), "the first vma backup")
    check_archive(d, v.stream_path, STD_DISKS, t)
    check_live(q, d, t, WRITES)
    check_state(q, before)
    leftovers_none(fl, tmp)
    q.kill()


def case_cleanup_while_running(t):
    """vma backup --cleanup while a backup runs: it removes what killed
    processes left, not what a live vma uses (the names carry its pid)."""
    (d, fl, tmp, out), q, v, before = held_backup("cleanup-while-running", t)
    mid = vma_objects(q)
    rc, o, err = run_vma(d, ["backup", "--cleanup", "--qmp", q.qmp_path], tmpdir=tmp)
    E.check(rc == 0, "vma backup --cleanup while a backup runs: exit %d: %r" % (rc, err))
    E.check(vma_objects(q) == mid, "--cleanup removed a running backup's objects: %s, before: %s"
            % (vma_objects(q), mid))
    rc = v.finish()
    expect_success(rc, v.stderr(), "the backup that ran during --cleanup")
    if rc == 0:
        check_archive(d, v.stream_path, STD_DISKS, t)
    check_state(q, before)
    leftovers_none(fl, tmp)
    q.kill()


def case_unknown_disk(t):
    d, fl, tmp, out = case_dirs("unknown-disk")
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    for sel in ("drive-nothere", "drive-ide2"):
        rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", fl, "-d", sel,
                                 os.path.join(out, "a.vma")], tmpdir=tmp)
        lines = err.splitlines()
        E.check(rc in (1, 2) and len(lines) == 1 and lines[0].startswith("vma: ") and sel in lines[0],
                "vma backup -d %s: exit %d, stderr %r (expected a failure, one line naming it)"
                % (sel, rc, err))
        print("  -d %s: exit %d: %s" % (sel, rc, err.strip()))
        leftovers_none(fl, tmp, out, [])
    # A fleecing dir that is not there, or not a directory.
    for bad in (os.path.join(d, "no-such-dir"), os.path.join(d, "scsi0.qcow2")):
        rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--fleecing-dir", bad,
                                 os.path.join(out, "a.vma")], tmpdir=tmp)
        expect_failure(rc, err, [bad], what="vma backup --fleecing-dir " + bad)
        leftovers_none(fl, tmp, out, [])
    # JSON on failure: one document on stdout.
    rc, o, err = run_vma(d, ["backup", "--output-format=json", "--qmp", os.path.join(d, "none.qmp"),
                             "--fleecing-dir", fl, os.path.join(out, "a.vma")], tmpdir=tmp)
    try:
        doc = json.loads(o)
    except ValueError:
        doc = None
    E.check(rc == 2 and isinstance(doc, dict) and doc.get("exit") == 2 and "none.qmp" in doc.get("error", ""),
            "vma backup --output-format=json with a missing socket: exit %d, stdout %r, stderr %r" % (rc, o, err))
    check_state(q, before)
    q.kill()


def case_busy(t):
    d, fl, tmp, out = case_dirs("qmp-held")
    q = start_qemu(d, vm_args(d, t))
    before = qemu_state(q)
    holder = QMP(q.qmp_path)
    arch = os.path.join(out, "a.vma")
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--qmp-timeout=1", "--fleecing-dir", fl,
                             arch], tmpdir=tmp)
    # (the case's paths must not contain these words)
    expect_failure(rc, err, [("busy", "another client")], what="vma backup while another client holds QMP")
    holder.close()
    check_state(q, before)
    leftovers_none(fl, tmp, out, [])
    q.kill()


def refused(name, t, qemu_args, must_contain=(), std=True, prep=None, vma_args=()):
    """vma backup refuses a VM: exit 2, one line, nothing changed."""
    d, fl, tmp, out = case_dirs(name)
    args = (vm_args(d, t, qemu_args) if std else ["-S", "-m", "64"] + list(qemu_args))
    q = start_qemu(d, args)
    if prep:
        prep(q, d)
    before = qemu_state(q)
    arch = os.path.join(out, "a.vma")
    rc, o, err = run_vma(d, ["backup", "--qmp", q.qmp_path, "--qmp-timeout=10", "--fleecing-dir", fl]
                         + list(vma_args) + [arch], tmpdir=tmp)
    expect_failure(rc, err, must_contain, what="vma backup (%s)" % name)
    check_state(q, before)
    leftovers_none(fl, tmp, out, [])
    q.kill()


def null_disk(node, dev_id, size, bus="scsihw0.0", scsi_id=1, lun=0, drive_opts=None):
    if drive_opts:
        blk = ["-drive", "if=none,id=%s,driver=null-co,size=%d" % (node, size)]
    else:
        blk = ["-blockdev", "driver=null-co,node-name=%s,size=%d" % (node, size)]
    return blk + ["-device", "scsi-hd,bus=%s,scsi-id=%d,lun=%d,drive=%s,id=%s"
                  % (bus, scsi_id, lun, node, dev_id)]


def case_refusals(t):
    E.case = "refused: a selected disk has a block job"
    print("case: " + E.case, flush=True)
    try:
        refused("has-job", t, [], ["drive-virtio1"],
                prep=lambda q, d: add_foreign_job(q, d, "drive-virtio1"))
    except CaseFailed as e:
        print("  FAIL: " + str(e))

    E.case = "refused: a disk of size 0"
    print("case: " + E.case, flush=True)
    try:
        refused("size-0", t, null_disk("zero0", "zero0", 0), ["drive-zero0"])
    except CaseFailed as e:
        print("  FAIL: " + str(e))

    E.case = "refused: 255 disks"
    print("case: " + E.case, flush=True)
    try:
        a = ["-device", "virtio-scsi-pci,id=scsihw0", "-device", "virtio-scsi-pci,id=scsihw1"]
        for i in range(255):
            a += null_disk("n%d" % i, "d%d" % i, MiB, bus="scsihw%d.0" % (i // 128),
                           scsi_id=(i % 128) // 16, lun=i % 16)
        refused("255-disks", t, a, [("255", "254")], std=False)
    except CaseFailed as e:
        print("  FAIL: " + str(e))

    E.case = "refused: two disks named drive-foo"
    print("case: " + E.case, flush=True)
    try:
        a = (["-device", "virtio-scsi-pci,id=scsihw0"]
             + null_disk("drive-foo", "bar", MiB, scsi_id=0, drive_opts=True)
             + null_disk("nfoo", "foo", MiB, scsi_id=1))
        refused("same-name", t, a, ["drive-foo"], std=False)
    except CaseFailed as e:
        print("  FAIL: " + str(e))

    E.case = "refused: drive-<qdev id> longer than 1024 bytes"
    print("case: " + E.case, flush=True)
    try:
        a = ["-device", "virtio-scsi-pci,id=scsihw0"] + null_disk("nl", "x" * 1100, MiB, scsi_id=0)
        refused("long-name", t, a, std=False)
    except CaseFailed as e:
        print("  FAIL: " + str(e))


def case_bad_sockets(t):
    d, fl, tmp, out = case_dirs("bad-sockets")
    arch = os.path.join(out, "a.vma")

    def attempt(what, path, contain=()):
        rc, o, err = run_vma(d, ["backup", "--qmp", path, "--qmp-timeout=5", "--fleecing-dir", fl, arch],
                             tmpdir=tmp)
        expect_failure(rc, err, contain, what="vma backup --qmp " + what)
        leftovers_none(fl, tmp, out, [])

    attempt("<missing path>", os.path.join(d, "nothing.qmp"), [os.path.join(d, "nothing.qmp")])
    regular = os.path.join(d, "regular.qmp")
    with open(regular, "w") as f:
        f.write('{"QMP": {}}\n')
    attempt("<a regular file>", regular, [regular])

    # A socket that talks something else: greets with a line of text.
    path = os.path.join(d, "other.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    stop = threading.Event()
    conns = []

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(c)
            try:
                c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            except OSError:
                pass
    th = threading.Thread(target=serve)
    th.start()
    try:
        attempt("<a socket that is not QMP>", path)
    finally:
        stop.set()
        th.join()
        for c in conns:
            c.close()
        srv.close()

    # QEMU's human monitor (HMP) on a unix socket, and QEMU's state after.
    hmp = os.path.join(d, "hmp.sock")
    q = start_qemu(d, vm_args(d, t, ["-monitor", "unix:%s,server=on,wait=off" % hmp]))
    before = qemu_state(q)
    attempt("<QEMU's HMP socket>", hmp)
    check_state(q, before)
    q.kill()


def case_usage():
    d = E.casedir("usage")
    rc, o, err = run_vma(d, ["backup", "--help"])
    E.check(rc == 0 and "backup" in o, "vma backup --help: exit %d, %r" % (rc, err))
    rc, o, err = run_vma(d, ["backup", os.path.join(d, "a.vma")])
    E.check(rc == 1, "vma backup without --qmp: exit %d, expected 1 (%r)" % (rc, err))
    rc, o, err = run_vma(d, ["backup", "--qmp", os.path.join(d, "x.qmp")])
    E.check(rc == 1, "vma backup without an archive: exit %d, expected 1 (%r)" % (rc, err))
    rc, o, err = run_vma(d, ["backup", "--qmp", os.path.join(d, "x.qmp"), "--compress=nope",
                             os.path.join(d, "a.vma")])
    # As vma create refuses it: status 2, one line, before QEMU is asked.
    E.check(rc == 2 and "unknown compression 'nope'" in err and "connect" not in err,
            "vma backup --compress=nope: exit %d, expected 2 and the codec named (%r)" % (rc, err))
    dir_is(d, [], "the usage case's dir")


# --- main --------------------------------------------------------------------------

def main():
    global E
    if len(sys.argv) < 2:
        print("usage: live.py <vma> [<case-substring>...]", file=sys.stderr)
        return 99
    vma = os.path.abspath(sys.argv[1])
    wanted = sys.argv[2:]
    for tool in ("qemu-system-x86_64", "qemu-img", "qemu-io"):
        if shutil.which(tool) is None:
            print("live.py: SKIP: %s is missing (Debian packages qemu-system-x86, qemu-utils)" % tool,
                  file=sys.stderr)
            return 77
    r = subprocess.run([vma, "backup", "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        print("live.py: FAIL: `%s backup --help` exits %d: no backup command" % (vma, r.returncode),
              file=sys.stderr)
        return 1
    top = tempfile.mkdtemp(prefix="vma-live.", dir=os.environ.get("TMPDIR") or "/tmp")
    E = Env(vma, top)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    cases = [
        ("usage", lambda t: case_usage()),
        ("query-block of the VM", case_query_block),
        ("success, guest writes while held", case_success_live_writes),
        ("to a file, -c qemu-server.conf=<file>, vma list, vma config, qmrestore handshake",
         case_file_config),
        ("--compress=zstd", case_zstd),
        ("-d drive-virtio1", case_select_one),
        ("SIGTERM while held", lambda t: case_signal(t, signal.SIGTERM)),
        ("SIGINT while held", lambda t: case_signal(t, signal.SIGINT)),
        ("QEMU killed while held", case_qemu_killed),
        ("SIGKILL while held, then --cleanup", case_sigkill_cleanup),
        ("full fleecing dir (16 MiB tmpfs) while held", case_fleecing_full),
        ("full fleecing dir at the start", case_fleecing_full_at_start),
        ("full archive dir (8 MiB tmpfs)", case_archive_full),
        ("--qga: freeze around the transaction, writes while the thaw is held", lambda t: agent_case("qga", t)),
        ("--qga: SIGTERM while the thaw is held (archive to a file)",
         lambda t: agent_case("qga-sigterm", t, signal.SIGTERM)),
        ("--qga: SIGINT while the freeze is held", lambda t: agent_case("qga-sigint", t, signal.SIGINT,
                                                                        "guest-fsfreeze-freeze")),
        ("an NBD server of someone else runs", case_nbd_server_running),
        ("a second vma backup while one is held", case_concurrent),
        ("--cleanup while a backup is held", case_cleanup_while_running),
        ("-d of a disk that is not there, or not backed up", case_unknown_disk),
        ("QMP held by another client, --qmp-timeout=1", case_busy),
        ("sockets: missing, not QMP", case_bad_sockets),
        ("refusals", case_refusals),
    ]
    start = time.monotonic()
    try:
        t = None
        for name, fn in cases:
            if wanted and not any(w in name for w in wanted):
                continue
            if t is None and name not in ("usage",):
                print("making the disk templates", flush=True)
                t = make_templates(E.casedir("templates"))
            E.case = name
            if fn is not case_refusals:
                print("case: " + name, flush=True)
            n = len(E.fails)
            nskip = len(E.skipped)
            try:
                fn(t)
            except CaseFailed as e:
                if len(E.fails) == n or not E.fails[-1].endswith(str(e)):
                    E.fails.append("[%s] %s" % (E.case, e))
                print("  FAIL: %s" % e, flush=True)
            except (QMPError, OSError, subprocess.CalledProcessError) as e:
                E.fails.append("[%s] %s: %s" % (E.case, type(e).__name__, e))
                print("  FAIL: %s: %s" % (type(e).__name__, e), flush=True)
            finally:
                E.cleanup()
            if len(E.fails) == n and len(E.skipped) == nskip:
                print("  ok", flush=True)
    finally:
        E.cleanup()
        shutil.rmtree(top, ignore_errors=True)
    print("%d checks, %d failed, %.0f s%s" % (E.checks, len(E.fails), time.monotonic() - start,
                                              "; skipped: " + ", ".join(E.skipped) if E.skipped else ""))
    if E.fails:
        print("FAILED:", file=sys.stderr)
        for f in E.fails:
            print("  " + f, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
