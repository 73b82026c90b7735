"""Journal fields with the PROXY protocol (src/conn.c, src/logsink.c): the
accept and close entries of a connection that came through a balancer
carry the client (REMOTE_ADDR=, REMOTE_PORT=, from the header) and the
balancer (PROXY_ADDR=, PROXY_PORT=), the close also REPLIES= and
DURATION_USEC=; a health check (v2 LOCAL) is at priority 7 (debug). Every
other event an operator looks for has its own EPOLLD_EVENT= value: start,
listen, refuse, reload-applied, reload-refused (with REASON=), stop.

A fake journald (helpers.FakeJournald): a datagram socket that the daemon
finds at /run/systemd/journal/socket in its own mount namespace, with
stderr a file that JOURNAL_STREAM names (launcher.journal_options).
"""
import re
import socket
import struct
import time

import pytest

from helpers import FakeJournald
from launcher import journal_options

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, sport, dst="10.0.0.5", dport=8001):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


@pytest.fixture
def daemon(epolld):
    path = epolld.workdir / "journal.sock"
    journal = FakeJournald(str(path))
    d = epolld.start(listen=("127.0.0.1",), level="info", server={"proxy_protocol": "yes"},
                     notify=epolld.notify(),
                     **journal_options(path, epolld.workdir / "journal.stderr"))
    try:
        journal.wait_one(EPOLLD_EVENT="start")
        yield d, journal
    finally:
        d.stop()
        journal.close()


def test_accept_and_close_name_the_client_and_the_balancer(daemon):
    d, journal = daemon
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(v2("198.18.0.10", 40000) + b"ping\r\n")
        assert s.recv(3) == b"Hi!"
        balancer_port = str(s.getsockname()[1])
        time.sleep(0.2)
    accept = journal.wait_one(EPOLLD_EVENT="accept")
    close = journal.wait_one(EPOLLD_EVENT="close")
    for e in (accept, close):
        assert (e["REMOTE_ADDR"], e["REMOTE_PORT"]) == ("198.18.0.10", "40000"), e
        assert (e["PROXY_ADDR"], e["PROXY_PORT"]) == ("127.0.0.1", balancer_port), e
        assert (e["CONNECTION_ID"], e["PRIORITY"]) == ("1", "6"), e
    assert re.fullmatch(rf"accepted connection #1 from 198\.18\.0\.10:40000 via "
                        rf"127\.0\.0\.1:{balancer_port} \(PROXY v2, fd \d+\)", accept["MESSAGE"])
    assert close["REPLIES"] == "1"
    usec = int(close["DURATION_USEC"])
    assert 200_000 <= usec < 5_000_000, close
    assert re.fullmatch(rf"closed connection #1 \(closed by peer\) after 1 replies in "
                        rf"{usec // 1_000_000}\.{usec // 1000 % 1000:03d} s; client "
                        rf"198\.18\.0\.10:40000 via 127\.0\.0\.1:{balancer_port} \(fd \d+\)",
                        close["MESSAGE"]), close
    assert d.log_path.read_text() == ""


def test_health_check_is_debug_and_refusals_are_events(daemon):
    d, journal = daemon
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(SIG + bytes([0x20, 0, 0, 0]) + b"ping\r\n")
        assert s.recv(3) == b"Hi!"
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        peer_port = str(s.getsockname()[1])
        s.settimeout(5)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    refused = journal.wait_one(EPOLLD_EVENT="refuse")
    assert (refused["REMOTE_ADDR"], refused["REMOTE_PORT"]) == ("127.0.0.1", peer_port)
    assert refused["REASON"] == "no PROXY protocol header"
    assert refused["PRIORITY"] == "4"
    # The health check's accept came before the refusal, on the same socket:
    # at level info there must be none (it is logged at debug).
    assert journal.find(lambda e: e.get("EPOLLD_EVENT") == "accept") is None


def test_operator_events(daemon):
    d, journal = daemon
    assert journal.wait_one(EPOLLD_EVENT="listen")["MESSAGE"] == f"listening on 127.0.0.1:{d.port}"
    d.signal(1)
    journal.wait_one(EPOLLD_EVENT="reload-applied")
    with open(d.config, "a") as f:
        f.write("[server]\n")  # a second [server] section: duplicate keys follow
        f.write("proxy_timeout = 99\n")
    d.signal(1)
    refused = journal.wait_one(EPOLLD_EVENT="reload-refused")
    assert refused["REASON"].endswith("proxy_timeout: 99 is out of range (1..60)"), refused
    assert d.stop() == 0
    assert journal.wait_one(EPOLLD_EVENT="stop")["REASON"] == "TERM"
