"""Handing connections to the fd store at stop (src/fdstore.c), seen from
a fake PID 1: a NOTIFY_SOCKET of the test's that receives the fds.

What the log says must be what happened. The boxes of connections go
first and the state after them, describing only the connections that were
stored; a box the store refuses, or one past $FDSTORE (systemd 254 and
later: FileDescriptorStoreMax=), is not sent, its connections are closed
and logged as lost, never as handed over. Before the fix the state went
first, and "handed N connection(s)" counted connections whose box had
failed.
"""
import os
import socket
import struct
import tempfile
import time

import pytest

from helpers import HEADER, STATE_MAGIC, ask, connect, sees_eof

HOLD = 5
# ino, id, replies, last_ms, born_us, addr, port, -, pending, flags, -
RECORD_V3 = struct.Struct("=QQQQQ16sHHIII")


class FakeStore:
    """A datagram socket standing in for PID 1's notify socket; keeps every
    message with the fds that came with it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="epolld-store-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (fields, [fds])

    def drain(self):
        self.sock.settimeout(0.05)
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 16)
            except (socket.timeout, BlockingIOError):
                return self.messages
            fields = dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)
            self.messages.append((fields, fds))

    def stored(self):
        return [(m["FDNAME"], fds) for m, fds in self.drain() if m.get("FDSTORE") == "1"]

    def refuse(self):
        """From now on every send to it fails (ECONNREFUSED)."""
        self.sock.close()

    def close(self):
        for _, fds in self.messages:
            for fd in fds:
                os.close(fd)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture
def store():
    s = FakeStore()
    yield s
    s.close()


def start(epolld, store, env=None, idle=0):
    d = epolld.start(listen=("127.0.0.1",), level="info", server={"idle_timeout": idle},
                     env={"NOTIFY_SOCKET": store.path, **(env or {})})
    clients = [connect(d.port) for _ in range(HOLD)]
    for c in clients:
        ask(c)
    return d, clients


def unbox(fd):
    """The number of fds parked in a box (each message: one byte + fds)."""
    box = socket.socket(fileno=os.dup(fd))
    box.setblocking(False)
    n = 0
    try:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(box, 1, 253)
            except BlockingIOError:
                return n
            n += len(fds)
            for f in fds:
                os.close(f)
    finally:
        box.close()


def state_count(fd):
    data = os.pread(fd, HEADER.size, 0)
    magic, version, _, count, _, _ = HEADER.unpack(data)
    assert magic == STATE_MAGIC and version == 3
    return count


def test_boxes_go_before_the_state_and_counts_are_true(epolld, store):
    d, clients = start(epolld, store)
    d.signal(15)
    assert d.wait_exit() == 0
    stored = [(name, fds) for name, fds in store.stored() if not name.startswith("listen_")]
    assert [name for name, _ in stored] == ["connbox", "state"], stored
    assert unbox(stored[0][1][0]) == HOLD
    assert state_count(stored[1][1][0]) == HOLD
    log = d.log()
    assert (f"notice: handed {HOLD} connection(s) to the service manager's fd store in 1 box(es); "
            "PID 1 keeps them only if FileDescriptorStoreMax= has room") in log, log
    assert "could not hand" not in log
    assert "without their state" not in log
    for c in clients:
        c.close()


def test_the_stored_state_carries_the_last_traffic(epolld, store):
    """With idle_timeout on, each stored record holds its connection's last
    traffic on CLOCK_MONOTONIC, so the time in the store counts as silence."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000_000
    d, clients = start(epolld, store, idle=60)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000_000
    d.signal(15)
    assert d.wait_exit() == 0
    state = dict(store.stored())["state"][0]
    data = os.pread(state, 1 << 16, 0)
    records = [RECORD_V3.unpack_from(data, HEADER.size + i * RECORD_V3.size)
               for i in range(state_count(state))]
    assert len(records) == HOLD
    assert all(before <= r[3] <= after for r in records), (before, records, after)
    for c in clients:
        c.close()


def test_a_refusing_store_closes_the_connections_and_says_so(epolld, store):
    d, clients = start(epolld, store)
    store.refuse()
    d.signal(15)
    assert d.wait_exit() == 0
    log = d.log()
    assert (f"err: could not hand {HOLD} connection(s) to the service manager's fd store "
            "(Connection refused); closed them") in log, log
    assert "handed" not in log
    assert log.count("(not stored) after 1 replies") == HOLD
    for c in clients:
        assert sees_eof(c)
        c.close()


def test_no_room_within_fdstore_sends_nothing(epolld, store):
    """FDSTORE=2: the listener takes one entry and the state needs one, so
    no box fits: nothing is sent and every connection is closed."""
    d, clients = start(epolld, store, env={"FDSTORE": "2"})
    d.signal(15)
    assert d.wait_exit() == 0
    names = [name for name, _ in store.stored()]
    assert "connbox" not in names and "state" not in names, names
    log = d.log()
    assert (f"err: could not hand {HOLD} connection(s) to the service manager's fd store "
            "(no room left within FDSTORE=); closed them") in log, log
    for c in clients:
        assert sees_eof(c)
        c.close()


def test_room_within_fdstore_is_used(epolld, store):
    d, clients = start(epolld, store, env={"FDSTORE": "3"})
    d.signal(15)
    assert d.wait_exit() == 0
    names = [name for name, _ in store.stored() if not name.startswith("listen_")]
    assert names == ["connbox", "state"]
    log = d.log()
    assert f"notice: handed {HOLD} connection(s) to the service manager's fd store in 1 box(es)\n" \
        in log, log
    for c in clients:
        c.close()
