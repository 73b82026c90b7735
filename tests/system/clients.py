"""Many TCP clients of the booted epolld, held from this (host) process.

The sockets are created in the container's network namespace (as
Container.socket() does, but once for a whole batch), so they reach its
loopback while this process stays on the host's. One epoll set watches all
of them for the peer's close only (EPOLLRDHUP; errors and hangups are
always reported), so a single epoll_wait(0) tells which saw EOF or RST
since they connected: the check that a restart closed nothing.

Everything is non-blocking and every wait has a deadline.
"""

import ctypes
import os
import errno
import fcntl
import select
import socket
import struct
import termios
import time

from container import Abort, StepFailed

CLONE_NEWNET = 0x40000000
REPLY = b"Hi!"
# Connects in flight at once: below the socket unit's backlog (SOMAXCONN).
CONNECT_WINDOW = 1000


def sockets_in(leader, n):
    """N TCP sockets in the network namespace of process LEADER."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/proc/{leader}/ns/net") as theirs, \
            open("/proc/self/ns/net") as ours:
        if libc.setns(theirs.fileno(), CLONE_NEWNET) != 0:
            raise StepFailed(f"setns: {os.strerror(ctypes.get_errno())}")
        made = []
        try:
            for _ in range(n):
                made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except OSError:
            for s in made:
                s.close()
            raise
        finally:
            if libc.setns(ours.fileno(), CLONE_NEWNET) != 0:
                raise Abort("cannot return to the host's network namespace")
    return made


def inq(s):
    """Bytes waiting in S's receive queue (FIONREAD), without reading."""
    return struct.unpack("i", fcntl.ioctl(s, termios.FIONREAD, b"\0" * 4))[0]


class Pool:
    """Held clients; each has a name (for messages) and a byte count of
    what it has received so far."""

    def __init__(self, leader, port):
        self.leader = leader
        self.port = port
        self.socks = []
        self.received = []
        self.watch = select.epoll()

    def __len__(self):
        return len(self.socks)

    def open(self, n, timeout=60, rcvbuf=None):
        """Connects N more clients; returns their indices."""
        new = sockets_in(self.leader, n)
        first = len(self.socks)
        for s in new:
            s.setblocking(False)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.socks.append(s)
            self.received.append(0)
        connecting = select.epoll()
        waiting = {}
        deadline = time.monotonic() + timeout
        nxt = done = 0
        try:
            while done < n:
                while nxt < n and len(waiting) < CONNECT_WINDOW:
                    s = new[nxt]
                    nxt += 1
                    err = s.connect_ex(("127.0.0.1", self.port))
                    if err not in (0, errno.EINPROGRESS):
                        raise StepFailed(f"connect #{first + nxt}: "
                                         f"{os.strerror(err)}")
                    waiting[s.fileno()] = s
                    connecting.register(s.fileno(), select.EPOLLOUT)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StepFailed(f"{done} of {n} connected within "
                                     f"{timeout}s")
                for fd, _ in connecting.poll(min(left, 1.0), len(waiting)):
                    s = waiting.pop(fd)
                    connecting.unregister(fd)
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise StepFailed(f"connect: {os.strerror(err)} after "
                                         f"{done} of {n}")
                    self.watch.register(fd, select.EPOLLRDHUP)
                    done += 1
        finally:
            connecting.close()
        return list(range(first, first + n))

    def closed(self, idxs=None):
        """Indices (of IDXS, default all) that saw EOF, RST or an error."""
        seen = {fd for fd, _ in self.watch.poll(0, max(1, len(self.socks)))}
        pick = range(len(self.socks)) if idxs is None else idxs
        return [i for i in pick if self.socks[i].fileno() in seen]

    def wait_closed(self, idxs, timeout):
        """Seconds until every one of IDXS saw a close, or a failure."""
        started = time.monotonic()
        while True:
            left = set(idxs) - set(self.closed(idxs))
            took = time.monotonic() - started
            if not left:
                return took
            if took >= timeout:
                raise StepFailed(f"{len(left)} of {len(idxs)} clients saw no "
                                 f"close within {timeout}s")
            time.sleep(0.1)

    def send(self, idxs, data=b"hello\n"):
        for i in idxs:
            if self.socks[i].send(data) != len(data):
                raise StepFailed(f"client {i}: short send")

    def read(self, idxs, want, timeout):
        """Reads until client i has received WANT[i] bytes in all (or the
        deadline). Returns {i: bytes read now}; the caller checks them."""
        got = {i: bytearray() for i in idxs}
        short = {i for i in idxs if self.received[i] < want[i]}
        reading = select.epoll()
        for i in short:
            reading.register(self.socks[i].fileno(), select.EPOLLIN)
        by_fd = {self.socks[i].fileno(): i for i in short}
        deadline = time.monotonic() + timeout
        try:
            while short and time.monotonic() < deadline:
                left = deadline - time.monotonic()
                for fd, _ in reading.poll(min(left, 0.5), len(short)):
                    i = by_fd[fd]
                    data = self._recv(i, want[i] - self.received[i])
                    got[i] += data
                    if not data or self.received[i] >= want[i]:
                        short.discard(i)
                        reading.unregister(fd)
        finally:
            reading.close()
        return got

    def _recv(self, i, n):
        try:
            data = self.socks[i].recv(n)
        except BlockingIOError:
            return b""
        except OSError as e:
            raise StepFailed(f"client {i}: {e}")
        self.received[i] += len(data)
        return data

    def extra(self, idxs, settle=0.3):
        """After SETTLE seconds: {i: bytes} of what IDXS got beyond what was
        read; an empty dict when nobody got more."""
        time.sleep(settle)
        more = {}
        for i in idxs:
            if inq(self.socks[i]):
                more[i] = self._recv(i, 4096)
        return more

    def exchange(self, idxs, timeout=30):
        """Each of IDXS sends one message and must get exactly b'Hi!'."""
        want = {i: self.received[i] + len(REPLY) for i in idxs}
        self.send(idxs)
        got = self.read(idxs, want, timeout)
        bad = {i: bytes(b) for i, b in got.items() if b != REPLY}
        bad.update(self.extra(idxs))
        if bad:
            sample = ", ".join(f"client {i}: {b!r}"
                               for i, b in list(bad.items())[:5])
            raise StepFailed(f"{len(bad)} of {len(idxs)} did not get exactly "
                             f"b'Hi!' ({sample})")

    def close(self, idxs=None):
        for i in (range(len(self.socks)) if idxs is None else idxs):
            s = self.socks[i]
            if s.fileno() >= 0:
                try:
                    self.watch.unregister(s.fileno())
                except (OSError, KeyError):
                    pass
                s.close()

    def close_all(self):
        self.close()
        self.socks = []
        self.received = []
        self.watch.close()
        self.watch = select.epoll()
