"""Logging never blocks the loop (src/log.c): stderr that nobody reads.

A supervisor that never reads the pipe, a socket peer that stops reading,
a terminal nobody drains: once that output is full, a line that cannot be
written at once is dropped and counted, the daemon keeps serving and stops
on SIGTERM. When the output takes lines again, "warning: N log line(s)
dropped: output not writable" comes first. Every line that does get out is
whole: no garbage, no line cut into another.

The output's buffer is made as small as the kernel allows (a 4 KiB pipe, a
socket with minimal buffers), so a few dozen lines fill it; the churn is
CLIENTS clients, each connect -> "x" -> "Hi!" -> close, at the default level
(info: an "accepted" and a "closed" line per client, 500 of each per 5 s).
With the old blocking write the daemon stops answering after a few dozen
clients: a client then times out after CLIENT_TIMEOUT and the test fails.
"""
import fcntl
import os
import pty
import re
import select
import signal
import socket
import subprocess
import termios
import time

import pytest

CLIENTS = 20000
CLIENT_TIMEOUT = 3.0
STOP_TIMEOUT = 2.0
F_SETPIPE_SZ = 1031
LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
LINE = re.compile(rf"^({'|'.join(LEVELS)}): \S.*$")
DROPPED = re.compile(r"^warning: (\d+) log line\(s\) dropped: output not writable$", re.M)


def unread_output(kind):
    """(the daemon's end, our end) of an output nobody reads, kept small."""
    if kind == "pipe":
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
        return w, r
    if kind == "socket":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return theirs.detach(), ours.detach()
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # lines stay "...\n", as on the other outputs
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return slave, master


def start(epolld, out_fd):
    """The daemon with OUT_FD as its stderr; returns (Daemon, notify) after READY=1."""
    n = epolld.notify()
    try:
        d = epolld.start(listen=("127.0.0.1",), level=None, notify=n, stderr=out_fd)
    finally:
        os.close(out_fd)
    return d, n


def churn(d, clients):
    """connect -> x -> Hi! -> close, CLIENTS times; each must get its reply."""
    t0 = time.monotonic()
    for i in range(clients):
        with socket.create_connection(("127.0.0.1", d.port), timeout=CLIENT_TIMEOUT) as c:
            c.sendall(b"x")
            try:
                got = c.recv(3)
            except socket.timeout:
                got = b"(timeout)"
            assert got == b"Hi!", (f"client {i + 1} of {clients} got {got!r} after "
                                   f"{time.monotonic() - t0:.1f} s: the daemon is stuck "
                                   f"(wchan {wchan(d.pid)})")
    return time.monotonic() - t0


def wchan(pid):
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return "?"


def read_all(fd, until_eof_timeout=0.0):
    """What is in FD now, or (with a timeout) until EOF/EIO or the timeout."""
    os.set_blocking(fd, False)
    data, deadline = b"", time.monotonic() + until_eof_timeout
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return data
            select.select([fd], [], [], min(left, 0.05))
            continue
        except OSError:  # EIO: the pty's last writer is gone
            return data
        if not chunk:
            return data
        data += chunk


def stop_within(d, timeout):
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    try:
        rc = d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout} s after SIGTERM (wchan {wchan(d.pid)})")
    return rc, time.monotonic() - t0


def assert_whole_lines(text, unfinished_ok=False):
    """Every line well formed. With UNFINISHED_OK the last one may be the
    start of a line that a socket or terminal took only in part (its end
    waits for room; nothing else is written before it)."""
    lines = text.split("\n")
    if unfinished_ok and any(f"{lv}: ".startswith(lines[-1]) or LINE.match(lines[-1] + "x")
                             for lv in LEVELS):
        lines[-1] = ""
    assert lines[-1] == "", f"output ends inside a line: {lines[-1]!r}"
    bad = [l for l in lines[:-1] if not LINE.match(l)]
    assert bad == [], bad[:5]


def report(capsys, text):
    with capsys.disabled():
        print("\n" + text)


@pytest.mark.parametrize("kind", ["pipe", "socket", "pty"])
def test_output_nobody_reads_neither_stalls_nor_blocks_the_stop(epolld, kind, capsys):
    theirs, ours = unread_output(kind)
    try:
        d, _ = start(epolld, theirs)
        try:
            took = churn(d, CLIENTS)
            rc, stop_s = stop_within(d, STOP_TIMEOUT)
        finally:
            d.kill()
        assert rc == 0
        out = read_all(ours).decode(errors="replace")
    finally:
        os.close(ours)
    assert_whole_lines(out, unfinished_ok=kind != "pipe")
    assert f"info: listening on 127.0.0.1:{d.port}" in out
    report(capsys, f"{kind}: {CLIENTS} clients served in {took:.1f} s with the output full; "
                   f"stopped {stop_s:.2f} s after SIGTERM; {len(out)} bytes got out")


def test_dropped_lines_are_counted_and_reported_once_the_pipe_drains(epolld, capsys):
    theirs, ours = unread_output("pipe")
    try:
        d, n = start(epolld, theirs)
        try:
            churn(d, CLIENTS)
            full = read_all(ours).decode()  # the pipe drains; nothing is logged meanwhile
            # A reload logs lines no rate limit holds back: the first of
            # them finds room, and the count goes out before it.
            d.signal(signal.SIGHUP)
            n.next_with("READY", "1")
            after = ""
            deadline = time.monotonic() + 5.0
            while "reloaded configuration" not in after and time.monotonic() < deadline:
                after += read_all(ours, 0.1).decode()
            rc, _ = stop_within(d, STOP_TIMEOUT)
        finally:
            d.kill()
        assert rc == 0
        after += read_all(ours, 1.0).decode()
    finally:
        os.close(ours)
    assert_whole_lines(full)
    assert_whole_lines(after)
    lines = after.splitlines()
    m = DROPPED.match(lines[0])
    assert m, lines[:3]
    dropped = int(m.group(1))
    # The churn tries at least 500 accepted + 500 closed lines (the rate
    # limit's burst); a 4 KiB pipe takes well under 100 of them.
    assert dropped >= 900, dropped
    assert any("notice: reloaded configuration from " in l for l in lines[1:]), lines[:5]
    assert len(DROPPED.findall(full + after)) == 1
    report(capsys, f"pipe: {dropped} log lines dropped while {CLIENTS} clients were served; "
                   f"{len(full.splitlines())} lines got into the full pipe")
