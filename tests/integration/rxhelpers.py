"""rxhelpers.py - helpers for the re-exec and inheritance tests
(test_reexec.py, test_inherit.py).

Starting the daemon: plainly (it binds its configured listener), from a
path of the test's choice (a copy of the binary, to replace or chmod it), or
with descriptors laid out at 3..N and LISTEN_FDS / LISTEN_FDNAMES /
LISTEN_PID set by hand, exactly as systemd or the daemon's own previous
image would pass them. A tiny launcher moves the fds into place and execs
the daemon in place, so LISTEN_PID is the daemon's own pid.

Looking inside without test hooks: /proc/PID/fdinfo of the daemon's epoll fd
lists every registered fd with its interest mask, which tells whether the
daemon holds unwritten replies (EPOLLOUT) or stopped reading a connection
(no EPOLLIN); SIOCINQ on a copy of a connection's server end tells how many
bytes the daemon has not read yet.

The state file format mirrors src/state.c (host byte order). Every wait is
bounded and polls; the `rx` fixture stops every process it started, by pid,
and fails the test on a sanitizer report in a daemon's log.
"""
import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import conftest
from conftest import free_port, free_ports, recv_for  # noqa: F401 (re-exported)

_HERE = Path(__file__).resolve().parent
BIN = os.path.abspath(os.environ.get("EPOLLD_BIN") or _HERE.parents[1] / "build" / "src" / "epolld")
TIMEOUT = 10.0
REPLY = b"Hi!"
EX_OSERR = 71
EPOLLIN, EPOLLOUT = 0x1, 0x4
PENDING_MAX = 192

_SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                 "LISTEN_FDNAMES", "JOURNAL_STREAM", "INVOCATION_ID")
_SANITIZER_REPORT = re.compile(
    r"ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")

ACCEPTED = re.compile(r"^info: accepted connection #(\d+) from 127\.0\.0\.1:(\d+) ", re.M)
ADOPTED = re.compile(r"^info: adopted connection #(\d+) from 127\.0\.0\.1:(\d+) \(fd (\d+)\)", re.M)
READ = re.compile(r"^debug: connection #(\d+): read (\d+) bytes$", re.M)
IGNORED_STATE = "warning: ignoring the inherited connection state: "


def wait_until(pred, timeout=TIMEOUT, interval=0.005, what="condition"):
    """Polls pred() until it returns something truthy; returns that."""
    return conftest.wait_until(pred, timeout, what, interval)






def write_config(path, port=None, level="debug"):
    lines = ["[server]"]
    if port is not None:
        lines.append(f"listen = 127.0.0.1:{port}")
    lines += ["[log]", f"level = {level}"]
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)


# --- clients -----------------------------------------------------------------

def connect(port, rcvbuf=None):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", port))
    return s


def recv_exact(sock, n, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise AssertionError(f"got {len(buf)} of {n} bytes within {timeout}s: {buf[-30:]!r}")
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes: {buf[-30:]!r}")
        buf += chunk
    return buf




def ask(sock, data=b"x", timeout=TIMEOUT):
    sock.sendall(data)
    got = recv_exact(sock, len(REPLY), timeout)
    assert got == REPLY, got
    return got


def sees_eof(sock, timeout=TIMEOUT):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def inq(sock):
    """Bytes waiting unread in SOCK's receive queue (SIOCINQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def tcp_pair(server_sndbuf=None, client_rcvbuf=None):
    """A connected loopback pair (client, server) made through a throwaway
    listener; the server end is what a daemon would have accepted."""
    with socket.socket() as l:
        if server_sndbuf:
            l.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server_sndbuf)  # inherited by accept
        l.bind(("127.0.0.1", 0))
        l.listen()
        c = socket.socket()
        if client_rcvbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, client_rcvbuf)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(TIMEOUT)
        c.connect(l.getsockname())
        s, _ = l.accept()
    return c, s


def fill_until_blocked(server):
    """Writes from SERVER until not even one more byte fits: the peer's
    receive buffer and our send buffer are full, so the daemon's next write
    on this socket gets EAGAIN. The peer must not read. Returns the count."""
    server.setblocking(False)
    total = 0
    for size in (65536, 1024, 1):
        for _ in range(100):
            try:
                total += server.send(b"F" * size)
                continue
            except BlockingIOError:
                pass
            time.sleep(0.02)  # the window may open once more as the peer's queue settles
            try:
                total += server.send(b"F" * size)
            except BlockingIOError:
                break
    return total


# --- the state file (src/state.c) ----------------------------------------------

STATE_MAGIC = b"EPOLLDST"
HEADER = struct.Struct("=8sIIQQQ")
RECORD = struct.Struct("=QQQII")


def state_bytes(records, next_id, replies=0, magic=STATE_MAGIC, version=1,
                record_size=RECORD.size, count=None):
    """records: (ino, id, replies, pending, flags) tuples."""
    head = HEADER.pack(magic, version, record_size, len(records) if count is None else count,
                       next_id, replies)
    return head + b"".join(RECORD.pack(*r) for r in records)


def memfd_with(data):
    fd = os.memfd_create("test-state", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def ino(sock_or_fd):
    fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno()
    return os.fstat(fd).st_ino


# --- /proc -------------------------------------------------------------------

def proc_fds(pid):
    return sorted(int(f) for f in os.listdir(f"/proc/{pid}/fd"))


def fd_target(pid, fd):
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def start_time(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def epoll_interest(pid):
    """{fd: interest mask} of every fd in the daemon's epoll set."""
    for fd in proc_fds(pid):
        if fd_target(pid, fd) == "anon_inode:[eventpoll]":
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            return {int(m.group(1)): int(m.group(2), 16)
                    for m in re.finditer(r"^tfd:\s+(\d+)\s+events:\s+([0-9a-f]+)", text, re.M)}
    raise AssertionError(f"no epoll fd in pid {pid}")


def socket_fd_of(pid, inode):
    """The fd number under which PID holds the socket INODE, or None."""
    for fd in proc_fds(pid):
        if fd_target(pid, fd) == f"socket:[{inode}]":
            return fd
    return None


def fd_cloexec(pid, fd):
    text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    return bool(int(re.search(r"^flags:\s+([0-7]+)", text, re.M).group(1), 8) & 0o2000000)


# --- the daemon --------------------------------------------------------------

_LAUNCHER = (
    "import fcntl, os, sys\n"
    "fds = [int(f) for f in sys.argv[1].split(',') if f]\n"
    "moved = [fcntl.fcntl(f, fcntl.F_DUPFD, 200) for f in fds]\n"
    "for i, f in enumerate(moved):\n"
    "    os.dup2(f, 3 + i, inheritable=True)\n"
    "for f in moved + [f for f in fds if f >= 3 + len(fds)]:\n"
    "    os.close(f)\n"
    "if fds:\n"
    "    os.environ['LISTEN_FDS'] = str(len(fds))\n"
    "    os.environ['LISTEN_FDNAMES'] = sys.argv[2]\n"
    "    os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n")  # a bare name is looked up in PATH


class Daemon:
    """One epolld process (started through the launcher: same pid) with its
    stderr in a file."""

    def __init__(self, workdir, exe, conf, fds=(), names=(), port=None, env=None):
        self.workdir = Path(workdir)
        self.exe = exe
        self.port = port
        self.conf = conf
        self.log_path = self.workdir / f"epolld-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-c", _LAUNCHER, ",".join(map(str, fds)), ":".join(names),
                exe, "-c", str(conf)]
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS} | (env or {})
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         pass_fds=tuple(fds), cwd=self.workdir)
        self.pid = self.proc.pid

    def log(self):
        return self.log_path.read_text(errors="replace")

    def count(self, needle):
        return self.log().count(needle)

    def running(self):
        return self.proc.poll() is None

    def wait_log(self, needle, count=1, timeout=TIMEOUT):
        """Waits for the COUNT-th occurrence of NEEDLE; fails early if the
        process exits first. Returns the log."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            log = self.log()
            if log.count(needle) >= count:
                return log
            if exited or time.monotonic() >= deadline:
                state = f"exited with {self.proc.returncode}" if exited else "still running"
                raise AssertionError(f"{needle!r} x{count} not logged ({state}); "
                                     f"log:\n{self.tail()}")
            time.sleep(0.002)

    def wait_ready(self, count=1, timeout=TIMEOUT):
        return self.wait_log(" started: ", count, timeout)

    def tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def signal(self, sig):
        os.kill(self.pid, sig)

    def reexec(self, timeout=TIMEOUT):
        """SIGUSR2 and wait for the new image to be up (one more 'started')."""
        before = self.count(" started: ")
        self.signal(signal.SIGUSR2)
        return self.wait_ready(before + 1, timeout)

    def wait_exit(self, timeout=TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {self.pid} still running after {timeout}s; "
                                 f"log:\n{self.tail()}") from None

    def ids_by_port(self, rx=ACCEPTED):
        """{client port: connection id} from the accepted (or adopted) lines."""
        return {int(m.group(2)): int(m.group(1)) for m in rx.finditer(self.log())}

    def reads(self):
        """{connection id: [bytes of each read]} from the debug lines."""
        out = {}
        for cid, n in READ.findall(self.log()):
            out.setdefault(int(cid), []).append(int(n))
        return out


class Harness:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.daemons = []

    def config(self, port=None, level="debug", name="epolld.ini"):
        return write_config(self.workdir / name, port, level)

    def start(self, exe=BIN, port=None, fds=(), names=(), conf=None, wait=True, level="debug",
              env=None):
        """Starts the daemon; binds 127.0.0.1:PORT from the configuration
        when PORT is given (a fresh one if PORT is True)."""
        if port is True:
            port = free_port()
        conf = conf or self.config(port, level)
        d = Daemon(self.workdir, exe, conf, fds, names, port, env)
        self.daemons.append(d)
        if wait:
            d.wait_ready()
        return d

    def cleanup(self):
        for d in self.daemons:
            if d.running():
                d.signal(signal.SIGTERM)
                try:
                    d.proc.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
                    d.proc.wait(TIMEOUT)
        bad = [d for d in self.daemons if _SANITIZER_REPORT.search(d.log())]
        if bad:
            pytest.fail("sanitizer report in the daemon's log:\n" + bad[0].tail(80))


@pytest.fixture
def rx(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()
