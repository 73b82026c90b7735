"""helpers.py - everything the black-box tests share that is not starting
the daemon (that is launcher.py): bounded waits, free ports, clients, views
of a process through /proc, a fake NOTIFY_SOCKET, a fake journald, and the
state file that src/state.c reads.

Every wait here is bounded and polls for its condition; nothing sleeps
blindly for longer than one polling interval.

Looking inside the daemon without test hooks: /proc/PID/fdinfo of its epoll
fd lists every registered fd with its interest mask, which tells whether
the daemon holds unwritten replies (EPOLLOUT) or stopped reading a
connection (no EPOLLIN); SIOCINQ on a copy of a connection's server end
tells how many bytes the daemon has not read yet.
"""
import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import tempfile
import termios
import time
from pathlib import Path

EX_OK, EX_USAGE, EX_OSERR, EX_CONFIG = 0, 64, 71, 78
REPLY = b"Hi!"
PENDING_MAX = 192           # replies the daemon holds before it stops reading
TIMEOUT = 10.0              # the bound for anything that should happen "soon"
EPOLLIN, EPOLLOUT = 0x1, 0x4

ACCEPTED = re.compile(r"^info: accepted connection #(\d+) from 127\.0\.0\.1:(\d+) ", re.M)
ADOPTED = re.compile(r"^info: adopted connection #(\d+) from 127\.0\.0\.1:(\d+) \(fd (\d+)\)", re.M)
READ = re.compile(r"^debug: connection #(\d+): read (\d+) bytes$", re.M)
IGNORED_STATE = "warning: ignoring the inherited connection state: "


def wait_until(predicate, timeout=TIMEOUT, what="condition", interval=0.01):
    """Polls PREDICATE until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (a start that loses the race retries)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n, host="127.0.0.1"):
    """N distinct ports that were free a moment ago: all are held open
    together while they are picked, so none is handed out twice."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(_family(host), socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --- clients -----------------------------------------------------------------

def connect(port, host="127.0.0.1", timeout=TIMEOUT, rcvbuf=None, sndbuf=None):
    """A blocking client socket (TCP_NODELAY) with a timeout on every operation."""
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(timeout)
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def reset(sock):
    """Closes SOCK with an RST instead of a FIN (SO_LINGER with timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_exact(sock, n, timeout=TIMEOUT):
    """Exactly N bytes, or AssertionError saying what did arrive."""
    deadline = time.monotonic() + timeout
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise AssertionError(f"got {len(buf)} of {n} bytes within {timeout} s: {buf[-30:]!r}")
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes: {buf[-30:]!r}")
        buf += chunk
    return buf


def recv_for(sock, duration):
    """Whatever arrives within DURATION seconds (b"" if nothing)."""
    deadline = time.monotonic() + duration
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_until_eof(sock, timeout):
    """Everything up to EOF; AssertionError if EOF does not come in time."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise AssertionError(f"no EOF within {timeout} s ({len(data)} bytes so far)")
        chunk = sock.recv(1 << 20)
        if not chunk:
            return data
        data += chunk


def sees_eof(sock, timeout=TIMEOUT):
    """True if SOCK reaches EOF (or a reset) within TIMEOUT, reading nothing else."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def exchange(sock, msg=b"hello\n", timeout=TIMEOUT):
    """Sends one message and returns the 3 bytes that come back."""
    sock.sendall(msg)
    return recv_exact(sock, len(REPLY), timeout)


def ask(sock, data=b"x", timeout=TIMEOUT):
    """exchange() that must get exactly Hi!."""
    got = exchange(sock, data, timeout)
    assert got == REPLY, f"expected {REPLY!r}, got {got!r}"
    return got


def assert_only_replies(data):
    assert len(data) % len(REPLY) == 0, f"{len(data)} bytes is not a whole number of replies"
    assert data == REPLY * (len(data) // len(REPLY)), "reply stream is not 'Hi!' repeated"


class Client:
    """One TCP connection; ask() sends a byte and expects exactly Hi!."""

    def __init__(self, port, host="127.0.0.1", timeout=TIMEOUT):
        self.sock = connect(port, host, timeout)

    def send(self, data=b"x"):
        self.sock.sendall(data)

    def recv_exact(self, n, timeout=TIMEOUT):
        return recv_exact(self.sock, n, timeout)

    def ask(self, data=b"x", timeout=TIMEOUT):
        return ask(self.sock, data, timeout)

    def wait_closed(self, timeout=TIMEOUT):
        """True once the daemon closed the connection (EOF or reset)."""
        return sees_eof(self.sock, timeout)

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
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return True
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


# --- /proc -------------------------------------------------------------------

def proc_status(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def proc_cpu_seconds(pid):
    """User + system CPU time of PID, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_time(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def stopped(pid):
    """True if PID is in state T (stopped by a signal)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()[0] == "T"


@contextlib.contextmanager
def frozen(pid):
    """PID is SIGSTOPped inside, SIGCONTinued at the end: what is sent or
    connected meanwhile lands in one epoll_wait batch, in that order."""
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: stopped(pid), what=f"pid {pid} to stop")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def listening_ports():
    """Local ports of the sockets in state LISTEN (this network namespace)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def proc_fds(pid):
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def fd_target(pid, fd):
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def fd_flags(pid, fd):
    """The open-file flags of /proc/PID/fdinfo/FD (O_NONBLOCK, O_CLOEXEC...)."""
    text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    return int(re.search(r"^flags:\s+([0-7]+)", text, re.M).group(1), 8)


def fd_cloexec(pid, fd):
    return bool(fd_flags(pid, fd) & 0o2000000)


def ino(sock_or_fd):
    fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno()
    return os.fstat(fd).st_ino


def socket_fd_of(pid, inode):
    """The fd number under which PID holds the socket INODE, or None."""
    for fd in proc_fds(pid):
        if fd_target(pid, fd) == f"socket:[{inode}]":
            return fd
    return None


def epoll_interest(pid):
    """{fd: interest mask} of every fd in the daemon's epoll set."""
    for fd in proc_fds(pid):
        if fd_target(pid, fd) == "anon_inode:[eventpoll]":
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            return {int(m.group(1)): int(m.group(2), 16)
                    for m in re.finditer(r"^tfd:\s+(\d+)\s+events:\s+([0-9a-f]+)", text, re.M)}
    raise AssertionError(f"no epoll fd in pid {pid}")


def listening_inode(pid, port):
    """Inode of the socket the process PID listens on at PORT, or None."""
    inodes = set()
    for fd in proc_fds(pid):
        m = re.fullmatch(r"socket:\[(\d+)\]", fd_target(pid, fd) or "")
        if m:
            inodes.add(m.group(1))
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
                return f[9]
    return None


# --- a fake NOTIFY_SOCKET ------------------------------------------------------

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
        self._seen = 0  # messages already returned by next()

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
            self.messages.append(Message(time.monotonic(), pid, data.decode(errors="replace")))
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
        """Everything that arrives during the next SECONDS (a deliberate
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


# --- a fake journald ------------------------------------------------------------

def journal_entry(data):
    """journald's native protocol: KEY=VALUE\\n, or KEY\\n<le64 size>VALUE\\n."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k, (size,) = line, struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + size]
            assert data[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[k.decode()] = v.decode()
    return fields


class FakeJournald:
    """A datagram socket bound at PATH that keeps every native entry sent
    to it (launcher.journal_options() makes the daemon take it for
    journald's)."""

    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.entries = []

    def poll(self):
        while True:
            try:
                self.entries.append(journal_entry(self.sock.recv(65536)))
            except BlockingIOError:
                return self.entries

    def find(self, pred):
        """The first entry for which pred(entry) holds, or None."""
        return next((e for e in self.poll() if pred(e)), None)

    def one(self, **want):
        """The entry with these field values if there is exactly one, else None."""
        found = [e for e in self.poll() if all(e.get(k) == v for k, v in want.items())]
        return found[0] if len(found) == 1 else None

    def wait_one(self, **want):
        return wait_until(lambda: self.one(**want), what=f"one entry with {want}")

    def close(self):
        self.sock.close()  # the socket file stays: sends are refused


# --- the state file (src/state.c, host byte order) ---------------------------

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
