"""SIGUSR2 with connections in both phases (src/state.c version 3): one past
its PROXY header keeps the client the header named (the close line after
the upgrade still names it, and its lifetime counts from the first accept);
one with half a header completes it after the upgrade and gets exactly one
reply; one that sent nothing yet still needs a header; the deadline of a
header still awaited survives too. A reload that turns the protocol off
applies to new connections only."""
import re
import socket
import struct
import time

from helpers import recv_exact, recv_for, sees_eof

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, sport, dst="10.0.0.5", dport=8001):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def reexec(d, n):
    before = d.count_log(r"^notice: SIGUSR2: re-executing ")
    d.signal(12)
    d.wait_log(rf"^notice: adopted {n} of {n} inherited connection\(s\)$", timeout=10,
               count=before + 1)


def test_upgrade_keeps_clients_and_half_headers(epolld):
    d = epolld(proxy_protocol="yes", proxy_timeout=30)
    done, half, none = d.connect(), d.connect(), d.connect()
    try:
        done.sendall(v2("198.18.0.10", 40000) + b"ping\r\n")
        assert recv_exact(done, 3) == b"Hi!"
        half.sendall(v2("198.18.0.11", 40001)[:17])
        d.wait_log(r"^info: accepted connection #1 from 198\.18\.0\.10:40000 via ")
        time.sleep(0.5)  # lifetime before the upgrade
        reexec(d, 3)
        reexec(d, 3)  # twice: the new image writes what it read

        half.sendall(v2("198.18.0.11", 40001)[17:] + b"x")
        assert recv_exact(half, 3) == b"Hi!"
        assert recv_for(half, 0.2) == b""
        d.wait_log(r"^info: accepted connection #2 from 198\.18\.0\.11:40001 via 127\.0\.0\.1:")

        none.sendall(b"hello")  # still in the header phase: refused
        assert sees_eof(none, 2.0)
        d.wait_log(r"^warning: refused connection from 127\.0\.0\.1:\d+ \(fd \d+\): "
                   r"no PROXY protocol header$")

        assert recv_for(done, 0.1) == b""
        done.sendall(b"x")
        assert recv_exact(done, 3) == b"Hi!"
        done.close()
        m = d.wait_log(r"^info: closed connection #1 \(closed by peer\) after 2 replies in "
                       r"(\d+\.\d{3}) s; client 198\.18\.0\.10:40000 via 127\.0\.0\.1:\d+ "
                       r"\(fd \d+\)$")
        assert float(m.group(1)) >= 0.5, m.group(0)
    finally:
        for s in (done, half, none):
            s.close()


def test_header_deadline_survives_an_upgrade(epolld):
    d = epolld(proxy_protocol="yes", proxy_timeout=2)
    s = d.connect()
    try:
        s.sendall(b"PROXY TCP4 ")
        t0 = time.monotonic()
        time.sleep(1.0)
        reexec(d, 1)
        assert sees_eof(s, 3.0)
        took = time.monotonic() - t0
        assert 1.8 <= took <= 3.0, took  # 2 s from the accept, not from the upgrade
    finally:
        s.close()


def test_reload_turns_the_protocol_off_for_new_connections_only(epolld):
    d = epolld(proxy_protocol="yes", proxy_timeout=30)
    waiting, past = d.connect(), d.connect()
    try:
        past.sendall(v2("198.18.0.10", 40000) + b"x")
        assert recv_exact(past, 3) == b"Hi!"
        waiting.sendall(b"PROXY ")
        d.wait_log(r"^info: accepted connection #1 ")
        d.config.write_text(re.sub(r"proxy_protocol = yes", "proxy_protocol = no",
                                   d.config.read_text()))
        d.signal(1)
        d.wait_log(r"^notice: reloaded configuration from ")
        with d.connect() as plain:  # new: no header expected
            plain.sendall(b"hello")
            assert recv_exact(plain, 3) == b"Hi!"
        past.sendall(b"y")  # past its header: untouched
        assert recv_exact(past, 3) == b"Hi!"
        waiting.sendall(b"TCP4 198.18.0.12 10.0.0.5 40002 8001\r\nz")  # still expects its header
        assert recv_exact(waiting, 3) == b"Hi!"
        d.wait_log(r"^info: accepted connection #\d+ from 198\.18\.0\.12:40002 via 127\.0\.0\.1:")
    finally:
        waiting.close()
        past.close()
