"""idle_timeout across upgrades, reloads and restarts (src/idle.c,
src/state.c): a connection's clock is its silence, and only traffic resets
it. SIGUSR2 carries each connection's last traffic (CLOCK_MONOTONIC) in the
state file to the new image; a reload that changes the timeout keeps every
clock. Before the fix both reset every clock to "now", so a SIGUSR2 every
0.7 s, or reloads between 2 and 3 s, kept a silent connection open for ever.

The state file's version 2 record carries the last traffic; a version 1
record (an older binary's) is still accepted and counts as traffic at
adoption; a time in the future rejects the file like any bad field.
"""
import os
import signal
import struct
import threading
import time

from helpers import (ADOPTED, HEADER, IGNORED_STATE, STATE_MAGIC, ask, connect, free_port, ino,
                     memfd_with, state_bytes, tcp_pair)

TIMEOUT_S = 2
MARGIN = 0.8  # a shared 2-core machine: timers and re-execs run late
RECORD_V2 = struct.Struct("=QQQQII")  # ino, id, replies, last_ms, pending, flags


def write_conf(epolld, port, idle):
    return epolld.config("idle.ini", listen=[f"127.0.0.1:{port}"], level="info",
                         idle_timeout=idle)


def state_v2(records, next_id):
    """records: (ino, id, replies, last_ms, pending, flags)."""
    head = HEADER.pack(STATE_MAGIC, 2, RECORD_V2.size, len(records), next_id, 0)
    return head + b"".join(RECORD_V2.pack(*r) for r in records)


def monotonic_ms():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000_000


class CloseWatch:
    """The monotonic time at which the daemon closes SOCK (EOF or reset),
    seen by a thread blocked in recv, so no other wait delays it."""

    def __init__(self, sock):
        self.at = None
        self.data = b""
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()

    def _run(self, sock):
        sock.settimeout(None)
        try:
            while chunk := sock.recv(64):
                self.data += chunk
        except OSError:
            pass
        self.at = time.monotonic()

    def closed_at(self, timeout=5.0):
        """The close time, once the thread has seen it: the daemon's close
        line can be read before the thread's recv() has returned."""
        self._thread.join(timeout)
        assert self.at is not None, f"no close seen within {timeout} s"
        return self.at


def silent_client(port):
    """A client that is answered once and then says nothing; returns it,
    the time of its last traffic and a watch on its close."""
    c = connect(port)
    ask(c)
    last = time.monotonic()
    return c, last, CloseWatch(c)


def churn_until_closed(watch, last, act, every, limit):
    """Calls ACT every EVERY seconds until WATCH sees the close or LIMIT
    seconds have passed since LAST; returns the silence at the close."""
    while watch.at is None and time.monotonic() - last < limit:
        started = time.monotonic()
        act()
        while watch.at is None and time.monotonic() - started < every:
            time.sleep(0.005)
    assert watch.at is not None, f"a silent connection still open {limit} s after its last traffic"
    return watch.at - last


def test_sigusr2_does_not_reset_the_idle_clock(epolld):
    port = free_port()
    d = epolld.start(write_conf(epolld, port, TIMEOUT_S))
    c, last, watch = silent_client(port)
    silence = churn_until_closed(watch, last, d.reexec, every=0.7, limit=3 * TIMEOUT_S + 1)
    print(f"silent connection closed {silence:.2f} s after its last traffic, "
          f"{d.count(' started: ') - 1} re-exec(s) meanwhile")
    assert d.count(" started: ") >= 3, "fewer re-execs than the test means to make"
    assert TIMEOUT_S - 0.2 <= silence <= TIMEOUT_S + MARGIN, f"closed after {silence:.2f} s"
    assert watch.data == b""
    d.wait_text("closed connection #1 (idle timeout)")
    with connect(port) as fresh:
        ask(fresh)
    c.close()


def test_reload_between_two_timeouts_keeps_the_clock(epolld):
    port = free_port()
    d = epolld.start(write_conf(epolld, port, TIMEOUT_S))
    c, last, watch = silent_client(port)
    flip = [TIMEOUT_S]

    def reload():
        flip[0] = 5 - flip[0]  # 2 -> 3 -> 2 ...
        write_conf(epolld, port, flip[0])
        before = d.count("reloaded configuration from")
        d.signal(signal.SIGHUP)
        d.wait_text("reloaded configuration from", count=before + 1)

    silence = churn_until_closed(watch, last, reload, every=0.7, limit=3 * (TIMEOUT_S + 1) + 1)
    print(f"silent connection closed {silence:.2f} s after its last traffic, "
          f"{d.count('reloaded configuration from')} reload(s) meanwhile")
    assert TIMEOUT_S - 0.2 <= silence <= TIMEOUT_S + 1 + MARGIN, f"closed after {silence:.2f} s"
    d.wait_text("closed connection #1 (idle timeout)")
    c.close()


def test_state_carries_the_last_traffic(epolld):
    """A version 2 record 1.5 s silent is closed about 0.5 s after the
    start; a record of unknown time (0) and a conn without a record count
    from the adoption."""
    (c_old, s_old), (c_none, s_none), (c_zero, s_zero) = [tcp_pair() for _ in range(3)]
    now = monotonic_ms()
    v2 = memfd_with(state_v2([(ino(s_old), 1, 1, now - 1500, 0, 0),
                              (ino(s_zero), 2, 1, 0, 0, 0)], next_id=2))
    fds = [os.dup(s.fileno()) for s in (s_old, s_zero, s_none)] + [v2]
    for s in (s_old, s_zero, s_none):
        s.close()
    port = free_port()
    conf = write_conf(epolld, port, TIMEOUT_S)
    start = time.monotonic()
    watches = {name: CloseWatch(c) for name, c in (("old", c_old), ("zero", c_zero),
                                                   ("none", c_none))}
    d = epolld.start(conf, fds=fds, names=["conn", "conn", "conn", "state"])
    for fd in fds:
        os.close(fd)
    d.wait_text("adopted 3 of 3 inherited connection(s)")
    assert IGNORED_STATE not in d.log()
    d.wait_text("closed connection #1 (idle timeout)", timeout=TIMEOUT_S)
    old_closed = watches["old"].closed_at() - start
    assert old_closed <= 0.5 + MARGIN, old_closed
    for name in ("zero", "none"):
        closed = watches[name].at
        assert closed is None or closed - start >= TIMEOUT_S - 0.2, f"{name} closed early"


def test_version_1_state_counts_from_the_adoption(epolld):
    c, s = tcp_pair()
    state = memfd_with(state_bytes([(ino(s), 4, 1, 0, 0)], next_id=4))
    fds = [os.dup(s.fileno()), state]
    s.close()
    port = free_port()
    start = time.monotonic()
    watch = CloseWatch(c)
    d = epolld.start(write_conf(epolld, port, TIMEOUT_S), fds=fds, names=["conn", "state"])
    for fd in fds:
        os.close(fd)
    log = d.wait_text("adopted 1 of 1 inherited connection(s)")
    assert IGNORED_STATE not in log and ADOPTED.search(log).group(1) == "4"
    d.wait_text("closed connection #4 (idle timeout)", timeout=TIMEOUT_S + MARGIN + 1)
    assert TIMEOUT_S - 0.2 <= watch.closed_at() - start <= TIMEOUT_S + MARGIN + 0.5


def test_last_traffic_in_the_future_rejects_the_state(epolld):
    c, s = tcp_pair()
    state = memfd_with(state_v2([(ino(s), 3, 0, monotonic_ms() + 60_000, 0, 0)], next_id=3))
    fds = [os.dup(s.fileno()), state]
    s.close()
    d = epolld.start(listen=("127.0.0.1",), level="debug", fds=fds, names=["conn", "state"])
    for fd in fds:
        os.close(fd)
    log = d.wait_text(IGNORED_STATE)
    assert "record 0: last traffic " in log and " ms is in the future" in log, log
    ask(c)
    c.close()
