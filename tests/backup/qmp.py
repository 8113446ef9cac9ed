"""A small QMP and QEMU-guest-agent client for the live backup tests, and a
QEMU launcher that always stops what it started.

Tests that use it run under /usr/bin/python3 (Debian's), standard library
only. SPDX-License-Identifier: MIT
"""
import json
import os
import signal
import socket
import subprocess
import time


class QMPError(Exception):
    pass


def wait_for_socket(path, timeout=30.0, proc=None):
    """Wait until a unix socket accepts connections."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise QMPError("QEMU exited with %s before %s appeared" % (proc.returncode, path))
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                s.close()
                return
            except OSError:
                s.close()
        time.sleep(0.05)
    raise QMPError("timed out waiting for " + path)


class QMP:
    """One QMP connection: greeting, qmp_capabilities, then commands.
    Events that arrive are kept in .events."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            raise QMPError("not a QMP greeting: %r" % self.greeting)
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        """Run a command; return its "return" value or raise QMPError."""
        return self.execute(name, args)

    def execute(self, name, args=None):
        """As cmd(), with the arguments as one dict: for commands that take
        an argument called "name" (block-export-add, nbd-server-add)."""
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise QMPError("%s: %s" % (name, r["error"].get("desc")))
            return r.get("return")

    def hmp(self, line):
        """A human monitor command; returns its text output."""
        return self.cmd("human-monitor-command", **{"command-line": line})

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class QGA:
    """The QEMU guest agent on its chardev socket (line-delimited JSON)."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("agent connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            line = self._line().strip(b"\xff").strip()
            if not line:
                continue
            r = json.loads(line)
            if "error" in r:
                raise QMPError("%s: %s" % (name, r["error"].get("desc")))
            return r.get("return")

    def sync(self, token=None):
        """guest-sync-delimited: skips whatever an earlier client left."""
        token = token or (os.getpid() * 1000 + int(time.monotonic() * 1000) % 1000)
        msg = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        self.sock.sendall(b"\xff" + json.dumps(msg).encode() + b"\n")
        while True:
            line = self._line()
            i = line.rfind(b"\xff")
            if i >= 0:
                line = line[i + 1:]
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("return") == token:
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Qemu:
    """qemu-system-x86_64 (TCG) with two QMP monitors: `qmp` for the
    command under test, `mon` for the test itself (QMP serves one client at
    a time). Use as a context manager: the process is always killed."""

    def __init__(self, workdir, args, name="vm"):
        self.workdir = workdir
        self.qmp_path = os.path.join(workdir, name + ".qmp")
        self.mon_path = os.path.join(workdir, name + "-test.qmp")
        self.log_path = os.path.join(workdir, name + ".log")
        cmd = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-nodefaults",
               "-display", "none", "-m", "256",
               "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path,
               "-qmp", "unix:%s,server=on,wait=off" % self.mon_path] + list(args)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_for_socket(self.mon_path, proc=self.proc)
            wait_for_socket(self.qmp_path, proc=self.proc)
            self.mon = QMP(self.mon_path)
        except Exception:
            self.kill()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def quit(self):
        """A clean shutdown through the test's monitor."""
        try:
            self.mon.cmd("quit")
        except (QMPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
