#!/usr/bin/python3
"""The real-guest test of `vma backup --qga`.

Boots Debian's cloud kernel under TCG with a small initramfs
(mkinitramfs.sh: busybox-static, qemu-ga and its libraries, the virtio
modules; guest-init is its /init). The guest mounts an ext4 file system
from a virtio disk (-drive id=drive-virtio0, so the archive names it
drive-virtio0) and writes a counter in a loop, fsync'd (see guest-init).
While it writes, `vma backup --qmp ... --qga ... --compress=gzip -v` backs
the VM up (a 48 MiB file of random bytes on the disk makes that take about
2 s, so the guest writes on during the read: copy-before-write); then the
archive is verified and extracted, and the restored disk must be
- a file system frozen in the copy: no needs_recovery (ext4_freeze flushes
  the journal and clears it; any copy of the mounted file system taken
  unfrozen has it set, and e2fsck -n and debugfs do not replay journals);
- clean: e2fsck -fn exits 0;
- consistent: /counter 4096 equal lines "counter N", /log 1..M, N = M or
  M+1, N at least what the guest had done when the backup started and at
  most what it had done after it; /filler's SHA-256 as written.
The guest must keep writing after the backup (thawed), the agent must say
"thawed", and QEMU must be left as it was: running, the same block nodes
and jobs, no block exports, no NBD server; the fleecing directory empty.
A failed `vma backup` is reported with what it left behind.

Usage: guest.py <vma> [--selfcheck | --selfcheck-nofreeze]
  --selfcheck          no vma backup: freeze with the agent, copy the image
                       with qemu-img convert -U, thaw; the same checks
  --selfcheck-nofreeze the same copy without the freeze: must FAIL (proves
                       the checks see an unfrozen copy)
Exit: 0 pass, 77 skip (a package is missing), 1 failure.
VMA_RUNNER in the environment prefixes every vma command (as in tests/cli).
Honours TMPDIR; VMA_KEEP_TMP=1 keeps the work directory.
SPDX-License-Identifier: MIT
"""
import glob
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import qmp  # noqa: E402

DISK_MB = 128
# A file of random data on the disk: an archive compressed with gzip takes
# about 2 s to write it, so the guest writes on while the backup reads
# (copy-before-write into the fleecing image), and its bytes are checked.
FILLER_MB = 48
COUNTER_LINES = 4096
# vma backup -v: a line that says "freeze" and how long the guest was
# frozen (a number with a unit)
FREEZE_LINE = re.compile(r"(?i)(?=.*freeze).*\b\d+(\.\d+)?\s*(s|ms|us|seconds?)\b")
T0 = time.monotonic()


class Fail(Exception):
    pass


def step(msg):
    print("[%6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def skip(msg):
    print("SKIP: " + msg, flush=True)
    sys.exit(77)


def run(cmd, timeout=60, check=True, **kw):
    """Run a command, return CompletedProcess (text). check: exit 0 or Fail."""
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise Fail("%s: no exit within %d s" % (shlex.join(cmd), timeout))
    r.stdout = r.stdout.decode(errors="replace")
    r.stderr = r.stderr.decode(errors="replace")
    if check and r.returncode != 0:
        raise Fail("%s: exit %d\nstdout: %s\nstderr: %s"
                   % (shlex.join(cmd), r.returncode, r.stdout.strip(), r.stderr.strip()))
    return r


def find_kernel():
    for k in sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64")):
        ver = os.path.basename(k)[len("vmlinuz-"):]
        if os.path.isfile("/lib/modules/%s/modules.dep" % ver):
            return k, ver
    return None, None


def check_prerequisites():
    missing = []
    for prog, pkg in [("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                      ("mkfs.ext4", "e2fsprogs"), ("e2fsck", "e2fsprogs"),
                      ("debugfs", "e2fsprogs"), ("dumpe2fs", "e2fsprogs"),
                      ("cpio", "cpio"), ("gzip", "gzip")]:
        if shutil.which(prog) is None:
            missing.append("%s (%s)" % (prog, pkg))
    if not os.access("/bin/busybox", os.X_OK):
        missing.append("/bin/busybox (busybox-static)")
    if not os.access("/usr/sbin/qemu-ga", os.X_OK):
        missing.append("/usr/sbin/qemu-ga (qemu-guest-agent)")
    kernel, ver = find_kernel()
    if kernel is None:
        missing.append("/boot/vmlinuz-*-cloud-amd64 with its modules (linux-image-cloud-amd64)")
    if missing:
        skip("missing: " + ", ".join(missing))
    return kernel, ver


class Serial:
    """The guest's console log (-serial file:...)."""

    def __init__(self, path):
        self.path = path

    def text(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def counter(self):
        m = re.findall(r"^guest: counter (\d+)\r?$", self.text(), re.M)
        return int(m[-1]) if m else 0

    def check(self):
        m = re.search(r"^guest: FAIL .*$", self.text(), re.M)
        if m:
            raise Fail("the guest failed: " + m.group(0).strip())

    def tail(self, n=15):
        return "\n".join(self.text().splitlines()[-n:])


def wait_agent(vm, serial, path, bound=90.0):
    """guest-sync then guest-ping until the agent answers."""
    end = time.monotonic() + bound
    last = None
    while time.monotonic() < end:
        if not vm.alive():
            raise Fail("QEMU exited (%s) before the agent answered; console:\n%s"
                       % (vm.proc.returncode, serial.tail()))
        serial.check()
        g = None
        try:
            g = qmp.QGA(path, timeout=2.0)
            g.sync()
            g.cmd("guest-ping")
            return
        except (OSError, qmp.QMPError, ValueError) as e:
            last = e
        finally:
            if g is not None:
                g.close()
        time.sleep(0.5)
    raise Fail("the agent did not answer guest-ping within %d s (%s); console:\n%s"
               % (bound, last, serial.tail()))


def agent_cmd(path, name, timeout=10.0, **args):
    g = qmp.QGA(path, timeout=timeout)
    try:
        g.sync()
        return g.cmd(name, **args)
    finally:
        g.close()


def wait_counter(vm, serial, at_least, bound, what):
    end = time.monotonic() + bound
    while time.monotonic() < end:
        serial.check()
        if not vm.alive():
            raise Fail("QEMU exited (%s) %s; console:\n%s"
                       % (vm.proc.returncode, what, serial.tail()))
        c = serial.counter()
        if c >= at_least:
            return c
        time.sleep(0.2)
    raise Fail("the guest's counter did not reach %d within %d s %s (it is at %d); console:\n%s"
               % (at_least, bound, what, serial.counter(), serial.tail()))


def qemu_state(vm):
    """What the backup must leave as it found it."""
    mon = vm.mon
    state = {
        "status": mon.cmd("query-status").get("status"),
        "jobs": mon.cmd("query-block-jobs"),
        "all_jobs": mon.cmd("query-jobs"),
        "nodes": sorted(n.get("node-name", "") for n in mon.cmd("query-named-block-nodes")),
        "exports": mon.cmd("query-block-exports"),
    }
    blk = {}
    for b in mon.cmd("query-block"):
        ins = b.get("inserted") or {}
        blk[b.get("device") or b.get("qdev")] = (ins.get("node-name"), ins.get("file"))
    state["block"] = blk
    return state


def nbd_server_running(vm, workdir):
    """QEMU has one NBD server: starting another fails while one runs."""
    probe = os.path.join(workdir, "nbd-probe.sock")
    try:
        vm.mon.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": probe}})
    except qmp.QMPError as e:
        return str(e)
    vm.mon.cmd("nbd-server-stop")
    return None


def check_left_as_found(vm, serial, qga, state0, fleecing, tmp):
    """After a backup, successful or not: the guest writes on (thawed), the
    agent says thawed, QEMU is as it was. Returns the guest's counter."""
    during = serial.counter()
    after = wait_counter(vm, serial, during + 5, 30, "after the backup (still frozen?)")
    step("the guest's counter runs on after the backup (%d, then %d)" % (during, after))
    st = agent_cmd(qga, "guest-fsfreeze-status")
    if st != "thawed":
        raise Fail("guest-fsfreeze-status after the backup: %r, not 'thawed'" % st)
    step("guest-fsfreeze-status: thawed")

    state1 = qemu_state(vm)
    problems = []
    for key in state0:
        if state0[key] != state1[key]:
            problems.append("%s: %r before, %r after" % (key, state0[key], state1[key]))
    if state1["status"] != "running":
        problems.append("the VM is %r, not running" % state1["status"])
    nbd = nbd_server_running(vm, tmp)
    if nbd is not None:
        problems.append("an NBD server still runs in QEMU (nbd-server-start: %s)" % nbd)
    left = os.listdir(fleecing)
    if left:
        problems.append("left in the fleecing directory: %s" % " ".join(sorted(left)))
    if problems:
        raise Fail("QEMU or the host was not left as the backup found it:\n  "
                   + "\n  ".join(problems))
    return after


def check_restored(raw, before, after):
    """e2fsck and the counter of a restored disk image."""
    size = os.path.getsize(raw)
    if size != DISK_MB << 20:
        raise Fail("%s: %d bytes, not %d" % (raw, size, DISK_MB << 20))
    # A frozen ext4 has its journal flushed and needs_recovery cleared
    # (ext4_freeze); a copy taken while the guest writes has it set, and
    # neither e2fsck -n nor debugfs replays the journal.
    feat = re.search(r"^Filesystem features:(.*)$",
                     run(["dumpe2fs", "-h", raw]).stdout, re.M)
    if feat is None:
        raise Fail("dumpe2fs -h %s: no features line" % raw)
    if "needs_recovery" in feat.group(1).split():
        raise Fail("%s: the journal needs recovery: the copy was not taken while the "
                   "guest was frozen (features:%s)" % (raw, feat.group(1)))
    step("no journal recovery needed (the copy was taken frozen)")
    r = run(["e2fsck", "-fn", raw], check=False)
    if r.returncode != 0:
        raise Fail("e2fsck -fn %s: exit %d (not a clean file system: was the guest frozen?)\n%s%s"
                   % (raw, r.returncode, r.stdout, r.stderr))
    step("e2fsck -fn: clean")
    counter = run(["debugfs", "-R", "cat /counter", raw]).stdout
    log = run(["debugfs", "-R", "cat /log", raw]).stdout
    lines = counter.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(counter) != COUNTER_LINES * 16 or len(lines) != COUNTER_LINES:
        raise Fail("/counter: %d bytes, %d lines; want %d lines of 16 bytes"
                   % (len(counter), len(lines), COUNTER_LINES))
    if any(ln != lines[0] for ln in lines) or not re.fullmatch(r"counter \d{7}", lines[0]):
        bad = sorted(set(lines))[:4]
        raise Fail("/counter is not %d equal lines: %r" % (COUNTER_LINES, bad))
    n = int(lines[0].split()[1])
    logs = log.split()
    m = len(logs)
    if [int(x) for x in logs] != list(range(1, m + 1)):
        raise Fail("/log is not 1..%d: %r ... %r" % (m, logs[:3], logs[-3:]))
    if n not in (m, m + 1):
        raise Fail("/counter is at %d but /log at %d" % (n, m))
    if n <= 0:
        raise Fail("/counter is at %d" % n)
    if not before <= n <= after:
        raise Fail("/counter is at %d: not between %d (before the backup) and %d (after it)"
                   % (n, before, after))
    step("counter consistent: %d equal lines 'counter %07d', log 1..%d, "
         "the guest was at %d before the backup and %d after" % (len(lines), n, m, before, after))
    return n


def main():
    args = sys.argv[1:]
    mode = "vma"
    if "--selfcheck" in args:
        mode = "selfcheck"
        args.remove("--selfcheck")
    elif "--selfcheck-nofreeze" in args:
        mode = "nofreeze"
        args.remove("--selfcheck-nofreeze")
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    vma = os.path.abspath(args[0])
    runner = shlex.split(os.environ.get("VMA_RUNNER", ""))
    # mkfs.ext4, e2fsck, debugfs, dumpe2fs are in /usr/sbin, not on every
    # user's PATH
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    kernel, kver = check_prerequisites()
    if not os.access(vma, os.X_OK):
        raise Fail("no vma binary at " + vma)
    if mode == "vma":
        r = run(runner + [vma, "backup", "--help"], check=False)
        if r.returncode != 0 or not re.search(r"\bvma backup\b", r.stdout + r.stderr):
            raise Fail("%s has no backup command (vma backup --help: exit %d)" % (vma, r.returncode))

    tmp = tempfile.mkdtemp(prefix="vma-backup-guest.", dir=os.environ.get("TMPDIR") or None)
    vm = None
    try:
        step("work directory " + tmp + ", kernel " + kernel)
        initrd = os.path.join(tmp, "initrd.gz")
        r = run(["bash", os.path.join(HERE, "mkinitramfs.sh"), initrd, kver], check=False, timeout=120)
        if r.returncode == 77:
            skip(r.stderr.strip())
        if r.returncode != 0:
            raise Fail("mkinitramfs.sh: exit %d: %s" % (r.returncode, r.stderr.strip()))
        step(r.stdout.strip())

        raw0 = os.path.join(tmp, "disk0.raw")
        disk = os.path.join(tmp, "disk.qcow2")
        with open(raw0, "wb") as f:
            f.truncate(DISK_MB << 20)
        content = os.path.join(tmp, "content")
        os.mkdir(content)
        filler_sum = hashlib.sha256()
        with open(os.path.join(content, "filler"), "wb") as f:
            for _ in range(FILLER_MB):
                b = os.urandom(1 << 20)
                filler_sum.update(b)
                f.write(b)
        run(["mkfs.ext4", "-F", "-q", "-L", "guest", "-d", content, raw0])
        shutil.rmtree(content)
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw0, disk])
        os.unlink(raw0)
        step("data disk: %d MiB ext4 with a %d MiB file of random bytes in %s"
             % (DISK_MB, FILLER_MB, disk))

        serial = Serial(os.path.join(tmp, "serial.log"))
        qga = os.path.join(tmp, "qga.sock")
        fleecing = os.path.join(tmp, "fleecing")
        os.mkdir(fleecing)
        qemu_args = [
            "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 quiet panic=-1", "-no-reboot",
            "-serial", "file:" + serial.path,
            "-drive", "if=none,id=drive-virtio0,file=%s,format=qcow2" % disk,
            "-device", "virtio-blk-pci,drive=drive-virtio0,id=virtio0",
            "-device", "virtio-serial",
            "-chardev", "socket,path=%s,server=on,wait=off,id=qga0" % qga,
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]
        vm = qmp.Qemu(tmp, qemu_args)
        step("QEMU started (pid %d)" % vm.proc.pid)
        wait_agent(vm, serial, qga)
        step("the agent answers guest-ping")
        c = wait_counter(vm, serial, 20, 60, "before the backup")
        step("the guest's counter runs (%d)" % c)

        state0 = qemu_state(vm)
        before = serial.counter()
        t = time.monotonic()
        out = os.path.join(tmp, "out.vma.gz")
        restore = os.path.join(tmp, "restore")
        if mode == "vma":
            cmd = runner + [vma, "backup", "--qmp", vm.qmp_path, "--qga", qga,
                            "--fleecing-dir", fleecing, "--compress=gzip", "-v", out]
            step("running " + shlex.join(cmd) + " (the guest at %d)" % before)
            r = run(cmd, timeout=180, check=False)
            took = time.monotonic() - t
            # -v's progress lines: only the last one shown
            lines = r.stderr.splitlines()
            shown = [ln for i, ln in enumerate(lines) if not ln.startswith("progress ")
                     or not any(x.startswith("progress ") for x in lines[i + 1:])]
            sys.stdout.write("".join("    | " + ln + "\n" for ln in shown))
            r.stderr = "\n".join(shown)
            if r.returncode != 0:
                msg = ("vma backup: exit %d after %.1f s\nstdout: %s\nstderr: %s"
                       % (r.returncode, took, r.stdout.strip(), r.stderr.strip()))
                # What a failed backup left behind, reported with it.
                try:
                    check_left_as_found(vm, serial, qga, state0, fleecing, tmp)
                    msg += "\n(after it: the guest thawed, QEMU left as found)"
                except (Fail, qmp.QMPError, OSError) as e:
                    msg += "\nafter it, also: %s" % e
                raise Fail(msg)
            freeze = [ln for ln in r.stderr.splitlines() if FREEZE_LINE.search(ln)]
            if not freeze:
                raise Fail("vma backup -v: no line on stderr names the freeze and its time "
                           "(/%s/):\n%s" % (FREEZE_LINE.pattern, r.stderr))
            step("vma backup: exit 0 in %.1f s; %s; the guest wrote from %d to %d meanwhile"
                 % (took, freeze[0].strip(), before, serial.counter()))
            if not os.path.isfile(out) or os.path.getsize(out) == 0:
                raise Fail("vma backup exited 0 but wrote no archive at " + out)
        else:
            copy = os.path.join(tmp, "copy.raw")
            if mode == "selfcheck":
                n = agent_cmd(qga, "guest-fsfreeze-freeze", timeout=60)
                step("guest-fsfreeze-freeze: %s file system(s) frozen" % n)
                st = agent_cmd(qga, "guest-fsfreeze-status")
                if st != "frozen":
                    raise Fail("guest-fsfreeze-status after freeze: %r" % st)
            try:
                run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", disk, copy])
            finally:
                if mode == "selfcheck":
                    n = agent_cmd(qga, "guest-fsfreeze-thaw", timeout=60)
                    step("guest-fsfreeze-thaw: %s thawed" % n)
            step("qemu-img convert -U: copy in %.1f s" % (time.monotonic() - t))

        after = check_left_as_found(vm, serial, qga, state0, fleecing, tmp)
        step("QEMU left as found: running, no jobs, exports, NBD server or extra nodes; "
             "fleecing directory empty")
        end_count = serial.counter()
        vm.quit()
        vm = None
        step("QEMU stopped; the guest's counter ended at %d" % end_count)

        if mode == "vma":
            r = run(runner + [vma, "verify", out], timeout=120)
            step("vma verify: ok")
            r = run(runner + [vma, "list", out], timeout=60)
            if "drive-virtio0" not in r.stdout:
                raise Fail("vma list names no drive-virtio0:\n" + r.stdout)
            run(runner + [vma, "extract", out, restore], timeout=120)
            files = sorted(os.listdir(restore))
            step("vma extract: " + " ".join(files))
            raw = os.path.join(restore, "disk-drive-virtio0.raw")
            if not os.path.isfile(raw):
                raise Fail("vma extract wrote no disk-drive-virtio0.raw: %s" % files)
        else:
            raw = copy
        check_restored(raw, before, after)
        dump = os.path.join(tmp, "filler.dump")
        run(["debugfs", "-R", "dump /filler %s" % dump, raw])
        h = hashlib.sha256()
        with open(dump, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        if h.hexdigest() != filler_sum.hexdigest():
            raise Fail("/filler: the restored file's SHA-256 differs from what was written")
        step("/filler: %d MiB, SHA-256 as written" % FILLER_MB)
        if mode == "nofreeze":
            print("FAIL (expected): the unfrozen copy passed every check", flush=True)
            return 1
        step("PASS")
        return 0
    except Fail as e:
        if mode == "nofreeze":
            print("FAIL as expected for an unfrozen copy: %s" % str(e).split("\n")[0], flush=True)
            return 0
        raise
    finally:
        if vm is not None:
            vm.kill()
        if os.environ.get("VMA_KEEP_TMP"):
            print("kept " + tmp, flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    # meson's timeout sends SIGTERM: unwind, so QEMU is killed and the
    # work directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except Fail as e:
        print("FAIL: %s" % e, flush=True)
        sys.exit(1)
    except (qmp.QMPError, OSError) as e:
        print("FAIL: %s: %s" % (type(e).__name__, e), flush=True)
        sys.exit(1)
