"""Backpressure: a client that sends and never reads must not keep the daemon
reading. Once 64 replies wait unwritten, the daemon stops reading that
connection: the client's data then piles up in the kernel's buffers until
its send() stalls, other clients are served as before, the daemon's memory
does not grow, and when the client finally reads it gets whole "Hi!"s.

Why the daemon's connections get small socket buffers here: a reply is 3
bytes per read of up to 64 KiB, and on loopback the daemon's kernel send
buffer autotunes up to net.ipv4.tcp_wmem[2] (4 MiB here), where about 1.3
million unread replies fit before write() would even return EAGAIN; only
then does the daemon's own limit come into play. Measured on this machine
with the default sysctls, a correct daemon stopped reading only after 10-18
s and 15-89 MiB of input (a million reads), or not within 64 MiB at all -
too slow and too close to any bound a test could set to tell it from a
daemon that never stops. So the daemon's send buffer is capped at 4 KiB and
its receive buffer at 1 MiB, one of two ways:
  - "netns": with CAP_NET_ADMIN, the test process moves into a network
    namespace of its own, brings its loopback up and sets tcp_wmem and
    tcp_rmem there; the daemon binds its own listener as usual.
  - "listener": without it (a container drops CAP_NET_ADMIN by default), on
    the machine's loopback the daemon is given its listener by socket
    activation, made with SO_SNDBUF and SO_RCVBUF set (as a .socket unit's
    SendBuffer= and ReceiveBuffer= do); accepted connections inherit them.
Either way a correct daemon stops within a fraction of a second, after about
1 MiB, and the bound on what a stalled flood may have got accepted is
computed from the caps in force (see stall_bound); a daemon without
backpressure goes on to FLOOD_LIMIT_BYTES. Which way ran, the bound and the
figures are printed.
"""
import ctypes
import fcntl
import os
import select
import socket
import struct
import time
from pathlib import Path

import pytest

from helpers import (PENDING_MAX, REPLY, assert_only_replies, exchange, recv_until_eof,
                     reset)

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
TCP_WMEM = (4096, 4096, 4096)
TCP_RMEM = (4096, 131072, 1 << 20)
LISTENER_SNDBUF, LISTENER_RCVBUF = 2048, 1 << 19  # the kernel doubles both

MESSAGE = b"0123456789abcde\n"      # 16 bytes: small messages, small reads
FLOOD_LIMIT_BYTES = 64 << 20
FLOOD_LIMIT_S = 20.0
STALL_S = 1.0                          # send() refused this long = stalled
CLIENT_SNDBUF = 65536                  # the kernel doubles it
# What one read may take, on average, before the daemon stops: the client
# sends small messages and the daemon reads as fast as they come, so its
# reads are a few dozen bytes (measured: 0.3-1.2 MiB in all, receive buffer
# included); 512 leaves room for a slow (sanitizer) build.
READ_ALLOWANCE = 512


def _set_lo_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _sysctl_max(name):
    return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])


def _into_small_buffers_netns(libc):
    """Moves this process into a new network namespace with loopback up and
    small TCP buffer limits. Returns None, or why not (then the caller
    moves back: the namespace may have been entered)."""
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
    try:
        _set_lo_up()
    except OSError as e:
        return f"bringing lo up (SIOCSIFFLAGS): {e.strerror}"
    try:
        Path("/proc/sys/net/ipv4/tcp_wmem").write_text(" ".join(map(str, TCP_WMEM)))
        Path("/proc/sys/net/ipv4/tcp_rmem").write_text(" ".join(map(str, TCP_RMEM)))
    except OSError as e:
        return f"setting tcp_wmem/tcp_rmem: {e.strerror}"
    return None


@pytest.fixture(scope="module")
def buffers():
    """"netns" if this process could move into a namespace of its own (and
    back afterwards), else "listener"; see the module's comment."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)

    def go_home():
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the original namespace failed")

    try:
        why_not = _into_small_buffers_netns(libc)
        if why_not:
            go_home()
        try:
            yield "netns" if not why_not else f"listener (no namespace of our own: {why_not})"
        finally:
            if not why_not:
                go_home()
    finally:
        os.close(home)


class Flood:
    """The daemon whose connections have small buffers, and those caps."""

    def __init__(self, epolld, buffers):
        self.mode = buffers
        if buffers == "netns":
            self.daemon = epolld()
            self.daemon_sndbuf, self.daemon_rcvbuf = _sysctl_max("tcp_wmem"), \
                _sysctl_max("tcp_rmem")
            return
        with socket.socket() as l:
            l.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LISTENER_SNDBUF)
            l.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LISTENER_RCVBUF)
            l.bind(("127.0.0.1", 0))
            l.listen()
            self.daemon_sndbuf = l.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            self.daemon_rcvbuf = l.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.daemon = epolld.start(epolld.config("activated.ini", level="info"),
                                       fds=[l.fileno()], names=["epolld.socket"])

    def stall_bound(self, client):
        """What a stalled flood from CLIENT may have got accepted: its own
        send buffer, the daemon's receive buffer, and what the daemon read
        before it stopped - one read per reply, and the replies that fit in
        its send buffer, the client's receive buffer and the 64 pending."""
        client_sndbuf = client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        client_rcvbuf = client.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        reads = (self.daemon_sndbuf + client_rcvbuf + PENDING_MAX) // len(REPLY)
        return client_sndbuf + self.daemon_rcvbuf + reads * READ_ALLOWANCE

    def report(self, capsys, text):
        with capsys.disabled():
            print(f"\nbackpressure ({self.mode}; daemon's buffers: send {self.daemon_sndbuf}, "
                  f"receive {self.daemon_rcvbuf}): {text}")


@pytest.fixture
def flood(epolld, buffers):
    return Flood(epolld, buffers)


def tcp_queues(local_port, remote_port):
    """(send queue, receive queue) of the IPv4 socket LOCAL_PORT -> REMOTE_PORT."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if (int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16)) == \
                (local_port, remote_port):
            tx, rx = f[4].split(":")
            return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no socket {local_port} -> {remote_port} in /proc/net/tcp")


def flooder(d):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SNDBUF)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(5)
    s.connect(("127.0.0.1", d.port))
    return s


def flood_until_stalled(d, sock):
    """Sends MESSAGE without reading until the daemon stops reading: send()
    refused for STALL_S while the daemon's side holds unread data. Returns
    (bytes accepted, seconds taken), or None if TCP itself stalled: send()
    refused while the daemon has nothing unread, which is the client in
    retransmission backoff (its tiny receive window makes the kernel drop
    segments now and then), not the daemon."""
    cport = sock.getsockname()[1]
    sock.setblocking(False)
    total = 0
    start = last_sent = time.monotonic()
    while True:
        now = time.monotonic()
        assert now - start < FLOOD_LIMIT_S and total < FLOOD_LIMIT_BYTES, (
            f"no backpressure: the daemon was still reading after {total} bytes "
            f"and {now - start:.1f} s")
        try:
            total += sock.send(MESSAGE)
            last_sent = now
            continue
        except BlockingIOError:
            pass
        if now - last_sent >= STALL_S:
            return (total, now - start) if tcp_queues(d.port, cport)[1] > 0 else None
        select.select([], [sock], [], 0.05)


def backpressured_client(d, attempts=3):
    """A client whose flood the daemon stopped reading: (socket, connection
    id, bytes accepted, seconds). An attempt that TCP stalls is retried on a
    new connection; the test fails if none gets to a conclusion."""
    for _ in range(attempts):
        s = flooder(d)
        cport = s.getsockname()[1]
        accepted = rf"^info: accepted connection #(\d+) from 127\.0\.0\.1:{cport} "
        conn_id = int(d.wait_log(accepted)[1])
        try:
            result = flood_until_stalled(d, s)
        except BaseException:
            s.close()
            raise
        if result:
            return (s, conn_id) + result
        s.close()
    raise AssertionError(f"TCP stalled all {attempts} floods before the daemon had to stop reading")


def test_flooding_client_that_never_reads(flood, capsys):
    d = flood.daemon
    for _ in range(20):  # warm up: the first connections touch what they need
        with d.connect() as s:
            assert exchange(s, MESSAGE * 100) == REPLY
    rss_before = d.rss_kib()
    margin_kib = 2048

    s, conn_id, total, took = backpressured_client(d)
    try:
        cport = s.getsockname()[1]
        bound = flood.stall_bound(s)
        flood.report(capsys, f"{total} bytes accepted, stalled after {took:.2f} s; bound {bound}")
        assert total < bound, f"{total} bytes accepted before the stall"

        # The daemon holds unread data and does not touch it.
        unread = tcp_queues(d.port, cport)[1]
        time.sleep(0.5)
        assert tcp_queues(d.port, cport)[1] == unread > 0, "the daemon kept reading"

        # Others are served promptly meanwhile.
        for i in range(5):
            with d.connect() as other:
                t = time.monotonic()
                assert exchange(other, timeout=1.0) == REPLY, f"client {i}"
                assert time.monotonic() - t < 0.5
        rss_after = d.rss_kib()
        print(f"VmRSS before the flood {rss_before} KiB, during the stall {rss_after} KiB")
        assert rss_after <= rss_before + margin_kib

        # Now the client reads: whole replies only, then EOF after its FIN.
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)
        data = recv_until_eof(s, timeout=30)
    finally:
        s.close()
    assert len(data) > 64 * 3
    assert_only_replies(data)
    m = d.wait_log(rf"^info: closed connection #{conn_id} \(closed by peer\) after (\d+) replies")
    assert int(m[1]) == len(data) // 3
    print(f"the flooding client got {len(data) // 3} replies")


def test_reset_while_backpressured(flood, capsys):
    d = flood.daemon
    s, conn_id, total, took = backpressured_client(d)
    bound = flood.stall_bound(s)
    flood.report(capsys, f"{total} bytes accepted, stalled after {took:.2f} s; bound {bound}")
    assert total < bound, f"{total} bytes accepted before the stall"
    reset(s)
    d.wait_log(rf"^info: closed connection #{conn_id} \(reset by peer\) after \d+ replies")
    with d.connect() as other:
        assert exchange(other) == REPLY
