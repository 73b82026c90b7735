"""sdhelpers.py - shared helpers for the systemd-facing integration tests
(tests/integration/test_systemd_*.py): starting the daemon plainly or
through systemd-socket-activate, a fake NOTIFY_SOCKET that records what
sd_notify sends (with the sender's pid), config files, and small clients.

Every wait is bounded and polls for its condition; nothing sleeps blindly
except where a test must show that something does *not* happen for a while.
The `sd` fixture tears down every process a test started, by its pid, and
fails the test if a sanitizer reported anything in the daemon's stderr.
"""
import errno
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import conftest
from conftest import free_port, free_ports  # noqa: F401 (re-exported)

_HERE = Path(__file__).resolve().parent
BIN = os.path.abspath(os.environ.get("EPOLLD_BIN") or _HERE.parents[1] / "build" / "src" / "epolld")
ACTIVATE = shutil.which("systemd-socket-activate")
TIMEOUT = 10.0  # the bound for anything that should happen "soon"
REPLY = b"Hi!"

# Variables that would change the daemon's behaviour if the test runner
# itself runs under systemd; each test sets what it needs explicitly.
_SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                 "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM", "INVOCATION_ID")
# systemd-socket-activate passes only TERM, PATH, USER, HOME and -E NAME on.
_SANITIZER_VARS = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "MSAN_OPTIONS")
_SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")


def wait_until(pred, timeout=TIMEOUT, interval=0.02, what="condition"):
    """Polls pred() until it returns something truthy; returns that."""
    return conftest.wait_until(pred, timeout, what, interval)


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False






class Client:
    """One TCP connection; ask() sends a byte and expects exactly Hi!."""

    def __init__(self, port, host="127.0.0.1", timeout=TIMEOUT):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))

    def send(self, data=b"x"):
        self.sock.sendall(data)

    def recv_exact(self, n, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def ask(self, data=b"x", timeout=TIMEOUT):
        self.send(data)
        got = self.recv_exact(len(REPLY), timeout)
        assert got == REPLY, f"expected {REPLY!r}, got {got!r}"
        return got

    def wait_closed(self, timeout=TIMEOUT):
        """True once the daemon closed the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(16) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def hi(port, host="127.0.0.1", timeout=TIMEOUT):
    """Connects, sends one byte, returns the reply (should be Hi!)."""
    with Client(port, host, timeout) as c:
        c.send()
        return c.recv_exact(len(REPLY), timeout)


def is_refused(port, host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return True
        return False


def listening_inode(pid, port):
    """Inode of the socket the process `pid` listens on at `port`, or None."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m:
            inodes.add(m.group(1))
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
                return f[9]
    return None


def fd_flags(pid, fd):
    """The open-file flags of /proc/PID/fdinfo/FD (O_NONBLOCK, O_CLOEXEC...)."""
    text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    return int(re.search(r"^flags:\s+([0-7]+)", text, re.M).group(1), 8)


class Message:
    """One datagram received on the notify socket."""

    def __init__(self, t, pid, text):
        self.t, self.pid, self.text = t, pid, text
        self.fields = dict(l.split("=", 1) for l in text.split("\n") if "=" in l)

    def __repr__(self):
        return f"<{self.t:.3f} pid={self.pid} {self.text!r}>"


class NotifySocket:
    """A bound AF_UNIX datagram socket to hand out as NOTIFY_SOCKET. It
    records each message with its arrival time and, via SO_PASSCRED, the
    sender's pid."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="epolld-sd-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.messages = []
        self._seen = 0  # messages already returned by wait_for/next

    def _drain(self, timeout):
        self.sock.settimeout(timeout)
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, BlockingIOError):
                return
            pid = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            self.messages.append(Message(time.monotonic(), pid, data.decode()))
            self.sock.settimeout(0)

    def poll(self, timeout=0.0):
        self._drain(timeout)
        return self.messages

    def next(self, pred=lambda m: True, timeout=TIMEOUT, what="a notify message"):
        """The first message after the ones already consumed for which
        pred(msg) holds; consumes everything up to and including it."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._seen, len(self.messages)):
                if pred(self.messages[i]):
                    self._seen = i + 1
                    return self.messages[i]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; "
                                     f"got {self.messages[self._seen:]!r}")
            self._drain(min(left, 0.1))

    def next_with(self, key, value=None, timeout=TIMEOUT):
        return self.next(lambda m: key in m.fields and (value is None or m.fields[key] == value),
                         timeout, f"{key}={value if value is not None else '*'}")

    def collect(self, seconds):
        """Everything that arrives during the next `seconds` (a deliberate
        wait: used to show that something does not happen, or how often)."""
        start = len(self.messages)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._drain(min(left, 0.1))
        self._seen = len(self.messages)
        return self.messages[start:]

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Daemon:
    """A started process (the daemon, possibly behind systemd-socket-activate
    or sh, which exec it in place: same pid). stdout and stderr go to files."""

    def __init__(self, argv, env, workdir, name, stderr_path=None, pass_fds=()):
        self.argv = argv
        self.err_path = Path(stderr_path) if stderr_path else workdir / f"{name}.stderr"
        self.out_path = workdir / f"{name}.stdout"
        with open(self.err_path, "ab") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, cwd=workdir, pass_fds=pass_fds)
        self.pid = self.proc.pid

    def log(self):
        return self.err_path.read_text(errors="replace")

    def lines(self):
        return self.log().splitlines()

    def count(self, needle):
        return self.log().count(needle)

    def wait_log(self, needle, count=1, timeout=TIMEOUT):
        """Waits until `needle` occurs `count` times in stderr; returns the log.
        Fails early if the process exits meanwhile."""
        def seen():
            if self.log().count(needle) >= count:
                return True
            if self.proc.poll() is not None and self.log().count(needle) < count:
                raise AssertionError(f"exited with {self.proc.returncode} before logging "
                                     f"{needle!r}; stderr:\n{self.log()}")
            return False
        wait_until(seen, timeout, what=f"{needle!r} x{count} in stderr:\n{self.log()}")
        return self.log()

    def running(self):
        return self.proc.poll() is None

    def signal(self, sig):
        os.kill(self.pid, sig)

    def reload(self, notify=None, timeout=TIMEOUT, markers=("reloaded configuration",
                                                             "reload failed",
                                                             "nothing to read")):
        """SIGHUP and wait until the reload is over: READY=1 on `notify`,
        else one more of the log lines that end a reload."""
        def done():
            log = self.log()
            return sum(log.count(m) for m in markers)
        before = done()
        self.signal(signal.SIGHUP)
        if notify is not None:
            return notify.next_with("READY", "1", timeout)
        wait_until(lambda: done() > before, timeout,
                   what=f"the end of a reload; stderr:\n{self.log()}")
        return None

    def wait_exit(self, timeout=TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {self.pid} still running after {timeout}s; "
                                 f"stderr:\n{self.log()}") from None

    def stop(self, timeout=TIMEOUT):
        """SIGTERM and wait; returns the exit code."""
        if self.running():
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(TIMEOUT)


def write_config(path, listen=(), log_level=None, **server):
    """An INI file: [server] with listen lines and any other keys, [log] level."""
    lines = ["[server]"]
    lines += [f"listen = {a}" for a in listen]
    lines += [f"{k} = {v}" for k, v in server.items()]
    if log_level:
        lines += ["[log]", f"level = {log_level}"]
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)


class Harness:
    """What one test starts, and its cleanup."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.daemons = []
        self.notifies = []
        self.sockets = []
        self._n = 0

    def config(self, name="epolld.ini", listen=(), **kw):
        return write_config(self.workdir / name, listen, **kw)

    def notify(self):
        n = NotifySocket()
        self.notifies.append(n)
        return n

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        env.update(extra or {})
        return env

    def _spawn(self, argv, env, stderr_path=None, pass_fds=()):
        self._n += 1
        d = Daemon(argv, env, self.workdir, f"epolld{self._n}", stderr_path, pass_fds)
        self.daemons.append(d)
        return d

    def start(self, conf, env=None, notify=None, wait=True, watchdog_pid_self=False,
              stderr_path=None):
        """The daemon on its own (binds its configured listeners). With
        wait, returns once it is ready: READY=1 on `notify` if given, else
        its 'started' log line."""
        extra = dict(env or {})
        if notify is not None:
            extra["NOTIFY_SOCKET"] = notify.path
        argv = [BIN, "-c", str(conf)]
        if watchdog_pid_self:
            argv = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" "$@"'] + argv
        d = self._spawn(argv, self.env(extra), stderr_path)
        if wait:
            self.wait_ready(d, notify)
        return d

    def wait_ready(self, d, notify=None):
        if notify is not None:
            m = notify.next_with("READY", "1")
            assert m.pid == d.pid, f"READY=1 came from pid {m.pid}, daemon is {d.pid}"
        else:
            d.wait_log(" started: ")

    def activate(self, listen, conf=None, datagram=False, notify=None, env=None):
        """systemd-socket-activate -l ADDR... epolld [-c CONF]. Returns once
        systemd-socket-activate listens (the daemon is not exec'ed yet: that
        happens on the first connection or datagram, see trigger())."""
        if not ACTIVATE:
            pytest.skip("systemd-socket-activate is not installed")
        argv = [ACTIVATE]
        if datagram:
            argv.append("--datagram")
        for a in listen:
            argv += ["-l", a]
        extra = dict(env or {})
        if notify is not None:
            extra["NOTIFY_SOCKET"] = notify.path
        for k in _SANITIZER_VARS:
            if k in os.environ:
                extra.setdefault(k, os.environ[k])
        for k, v in extra.items():
            argv += ["-E", f"{k}={v}"]
        argv.append(BIN)
        if conf:
            argv += ["-c", str(conf)]
        d = self._spawn(argv, self.env(extra))
        d.wait_log("Listening on ", count=len(listen))
        return d

    def trigger(self, d, port, host="127.0.0.1", notify=None):
        """Connects to make systemd-socket-activate exec the daemon; returns
        that first client, connected (the daemon accepts it once it runs)."""
        c = Client(port, host)
        self.sockets.append(c)
        d.wait_log("Execing ")
        self.wait_ready(d, notify)
        return c

    def manual_activate(self, fds, conf, listen_pid_self=True, n_fds=None, env=None):
        """Passes `fds` as 3, 4, ... with LISTEN_FDS/LISTEN_PID set by hand,
        through a tiny launcher that moves the fds and execs the daemon in
        place, so that LISTEN_PID can be the daemon's own pid."""
        n = len(fds) if n_fds is None else n_fds
        launcher = (
            "import fcntl, os, sys\n"
            "fds = [int(f) for f in sys.argv[1].split(',')]\n"
            "moved = [fcntl.fcntl(f, fcntl.F_DUPFD, 100) for f in fds]\n"  # out of 3..n's way
            "for i, f in enumerate(moved):\n"
            "    os.dup2(f, 3 + i, inheritable=True)\n"
            "for f in moved + [f for f in fds if f >= 3 + len(fds)]:\n"
            "    os.close(f)\n"
            "os.environ['LISTEN_FDS'] = sys.argv[2]\n"
            "os.environ['LISTEN_PID'] = str(os.getpid()) if sys.argv[3] == 'self' else '1'\n"
            "os.execv(sys.argv[4], sys.argv[4:])\n")
        argv = [sys.executable, "-c", launcher, ",".join(map(str, fds)), str(n),
                "self" if listen_pid_self else "other", BIN, "-c", str(conf)]
        return self._spawn(argv, self.env(env), pass_fds=fds)

    def cleanup(self):
        for c in self.sockets:
            c.close()
        for d in self.daemons:
            if d.running():
                d.signal(signal.SIGTERM)
                try:
                    d.proc.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    d.kill()
        for n in self.notifies:
            n.close()
        reports = [d for d in self.daemons if _SANITIZER_REPORT.search(d.log())]
        if reports:
            pytest.fail("sanitizer report in the daemon's stderr:\n" + reports[0].log())


@pytest.fixture
def sd(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()
