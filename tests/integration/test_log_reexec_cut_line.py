"""A line half written to a full stderr when SIGUSR2 re-executes
(src/logsink.c, src/reexec.c): the old image waits up to 200 ms for the
reader, then its rest is lost; the new image must begin its output with a
newline, or its first line is glued to the cut one. Before the fix the new
image's first line continued the old image's half line.

The output is a terminal (a pty, OPOST off) that nobody reads: a terminal
takes the start of a line when it has room for only part of it (a pipe
takes a line whole or not at all). Churned clients fill it, so one of
their lines is most likely left half written at the re-exec (here the
terminal took "info: accepted co" every time; were a line ever cut
nowhere, the test would pass without showing anything, never fail).
"""
import os
import pty
import re
import select
import signal
import socket
import termios
import time

# A level where a line begins; only a glued line has one further on
# ("info: accepted cowarning: 3 log line(s) dropped" before the fix).
LEVEL = re.compile(r"(?<!std)(?:emerg|alert|crit|err|warning|notice|info|debug): ")


def drain(fd, quiet=0.3, limit=10.0):
    """Everything FD holds, until it stays quiet for QUIET s."""
    out, end = b"", time.monotonic() + limit
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], quiet)
        if not r:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def churn(port, n):
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=3.0) as c:
            c.sendall(b"x")
            assert c.recv(3) == b"Hi!"


def test_no_line_is_glued_to_a_cut_one_across_a_reexec(epolld):
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    n = epolld.notify()
    try:
        d = epolld.start(listen=("127.0.0.1",), notify=n, stderr=slave)
    finally:
        os.close(slave)
    try:
        churn(d.port, 2000)  # far more than the terminal holds
        d.signal(signal.SIGUSR2)
        m = n.next_with("READY", "1", timeout=10)
        assert m.pid == d.pid
        out = drain(master)
        churn(d.port, 2)  # the new image writes again, now that there is room
        out += drain(master)
    finally:
        os.close(master)
    text = out.decode(errors="replace")
    assert "notice: SIGUSR2: re-executing" in text or "dropped" in text, text[-2000:]
    glued = [ln for ln in text.splitlines() if any(m.start() > 0 for m in LEVEL.finditer(ln))]
    assert not glued, glued
