"""proxy_protocol = yes (src/header.c): every connection begins with a PROXY
v1 or v2 header, which is consumed and never answered; the accept and close
lines name the client from the header and the balancer after "via".

What is refused (no header, a malformed or oversized one, a peer outside
proxy_from, a header still incomplete after proxy_timeout) is closed with a
rate-limited warning naming the socket's peer, and costs no CPU while it
waits. The headers here are the ones HAProxy 2.6 sends: v2 PROXY over TCP4
(family 0x11, length 12) before the client's bytes, v2 LOCAL (family 0,
length 0) followed by "ping\\r\\n" for its health checks, and v1 lines.
"""
import re
import socket
import struct
import time

from helpers import recv_exact, recv_for, sees_eof

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT4 = ("198.18.0.10", 40000)
CLIENT6 = ("2001:db8::7", 41000)


def dst_for(src):
    return ("2001:db8::5", 8001) if ":" in src[0] else ("10.0.0.5", 8001)


def v2(src=CLIENT4, dst=None, tlv=b""):
    dst = dst or dst_for(src)
    if ":" in src[0]:
        fam, pack = 0x21, lambda a: socket.inet_pton(socket.AF_INET6, a)
    else:
        fam, pack = 0x11, socket.inet_aton
    body = pack(src[0]) + pack(dst[0]) + struct.pack("!HH", src[1], dst[1]) + tlv
    return SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def v2_local():
    return SIG + bytes([0x20, 0x00, 0x00, 0x00])


def v1(src=CLIENT4, dst=None):
    dst = dst or dst_for(src)
    proto = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def start(epolld, level="info", **kw):
    return epolld(level=level, proxy_protocol="yes", **kw)


def esc(text):
    return re.escape(text)


def test_header_and_data_in_one_segment_get_exactly_one_reply(epolld):
    d = start(epolld)
    for n, (header, client, shown) in enumerate([
            (v2(), CLIENT4, "198.18.0.10:40000"),
            (v2(CLIENT6), CLIENT6, "[2001:db8::7]:41000"),
            (v1(), CLIENT4, "198.18.0.10:40000"),
            (v1(CLIENT6), CLIENT6, "[2001:db8::7]:41000")], start=1):
        with d.connect() as s:
            s.sendall(header + b"ping\r\n")
            assert recv_exact(s, 3) == b"Hi!"
            assert recv_for(s, 0.2) == b"", "more than one reply"
            assert ask(s) == b"Hi!"
            balancer = f"127.0.0.1:{s.getsockname()[1]}"
        kind = "PROXY v2" if header.startswith(SIG) else "PROXY v1"
        d.wait_log(rf"^info: accepted connection #{n} from {esc(shown)} via {esc(balancer)} "
                   rf"\({kind}, fd \d+\)$")
        d.wait_log(rf"^info: closed connection #{n} \(closed by peer\) after 2 replies in "
                   rf"\d+\.\d{{3}} s; client {esc(shown)} via {esc(balancer)} \(fd \d+\)$")


def ask(s, msg=b"x"):
    s.sendall(msg)
    return recv_exact(s, 3)


def test_header_alone_gets_nothing_then_each_read_one_reply(epolld):
    d = start(epolld)
    with d.connect() as s:
        s.sendall(v2())
        assert recv_for(s, 0.3) == b""
        d.wait_log(r"^info: accepted connection #1 from 198\.18\.0\.10:40000 via ")
        assert ask(s) == b"Hi!"
        assert ask(s) == b"Hi!"
    d.wait_log(r"^info: closed connection #1 \(closed by peer\) after 2 replies ")


def test_header_byte_by_byte_completes_without_spinning(epolld):
    """Each byte is a new event (SO_RCVLOWAT one past what was seen); the
    CPU over the whole slow header stays near zero."""
    d = start(epolld, proxy_timeout=30)
    header = v1()
    with d.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cpu0 = d.cpu_seconds()
        t0 = time.monotonic()
        for b in header:
            s.send(bytes([b]))
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        assert recv_for(s, 0.3) == b"", "a reply to a header"
        cpu = d.cpu_seconds() - cpu0
        assert cpu < 0.25 * elapsed, (cpu, elapsed)
        assert ask(s) == b"Hi!"
        assert ask(s, b"more") == b"Hi!"
        d.wait_log(r"^info: accepted connection #1 from 198\.18\.0\.10:40000 via 127\.0\.0\.1:")
    d.wait_log(r"^info: closed connection #1 \(closed by peer\) after 2 replies ")


def test_header_and_data_in_separate_segments(epolld):
    """v1 with check: once in twelve the header came alone, ping after it."""
    d = start(epolld)
    with d.connect() as s:
        s.sendall(b"PROXY TCP4 198.18.0.10 10.0.0.5 40000 8001\r")
        time.sleep(0.1)
        s.sendall(b"\n")
        assert recv_for(s, 0.2) == b""
        s.sendall(b"ping\r\n")
        assert recv_exact(s, 3) == b"Hi!"
        assert recv_for(s, 0.2) == b""


def test_local_and_unknown_keep_the_peer_and_local_is_debug(epolld):
    d = start(epolld, level="info")
    with d.connect() as s:
        s.sendall(v2_local() + b"ping\r\n")  # HAProxy's health check
        assert recv_exact(s, 3) == b"Hi!"
    with d.connect() as s:
        s.sendall(b"PROXY UNKNOWN\r\nping\r\n")
        assert recv_exact(s, 3) == b"Hi!"
        peer = f"127.0.0.1:{s.getsockname()[1]}"
    d.wait_log(rf"^info: closed connection #2 \(closed by peer\) after 1 replies in \S+ s; "
               rf"client {esc(peer)} via {esc(peer)} \(fd \d+\)$")
    assert d.count_log(r"connection #1 ") == 0, d.tail()  # the health check: debug only
    d.stop()

    d = start(epolld, level="debug")
    with d.connect() as s:
        s.sendall(v2_local() + b"ping\r\n")
        assert recv_exact(s, 3) == b"Hi!"
        peer = f"127.0.0.1:{s.getsockname()[1]}"
    d.wait_log(rf"^debug: accepted connection #1 from {esc(peer)} via {esc(peer)} "
               rf"\(PROXY v2 LOCAL, fd \d+\)$")
    d.wait_log(rf"^debug: closed connection #1 \(closed by peer\) after 1 replies in \S+ s; "
               rf"client {esc(peer)} via {esc(peer)} \(fd \d+\)$")


def closed_at_once(d, payload, reason):
    with d.connect() as s:
        peer = f"127.0.0.1:{s.getsockname()[1]}"
        s.sendall(payload)
        t0 = time.monotonic()
        assert sees_eof(s, 2.0), "not closed"
        assert time.monotonic() - t0 < 0.5
    d.wait_log(rf"^warning: refused connection from {esc(peer)} \(fd \d+\): {esc(reason)}$")


def test_no_malformed_or_oversized_header_is_closed_at_once(epolld):
    d = start(epolld)
    closed_at_once(d, b"hello\n", "no PROXY protocol header")
    closed_at_once(d, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 02\r\n", "v1 port not 0..65535 without "
                   "leading zeros")
    closed_at_once(d, b"PROXY UNKNOWN " + b"x" * 120, "v1 line longer than 107 bytes")
    closed_at_once(d, SIG + bytes([0x21, 0x11]) + struct.pack("!H", 1009),
                   "v2 header longer than 1024 bytes")
    closed_at_once(d, SIG + bytes([0x31]), "v2 version not 2")
    assert "accepted" not in d.log() and "closed connection" not in d.log()
    with d.connect() as s:  # the largest v2 header we take: 1024 bytes, TLVs included
        tlv = b"\x04" + struct.pack("!H", 1024 - 16 - 12 - 3) + b"t" * (1024 - 16 - 12 - 3)
        s.sendall(v2(tlv=tlv) + b"x")
        assert recv_exact(s, 3) == b"Hi!"


def test_incomplete_header_closed_after_proxy_timeout_at_no_cpu(epolld):
    d = start(epolld, proxy_timeout=2)
    socks = [d.connect() for _ in range(50)]
    try:
        for s in socks:
            s.sendall(v2()[:20])
        t0 = time.monotonic()
        cpu0 = d.cpu_seconds()
        time.sleep(1.5)
        cpu = d.cpu_seconds() - cpu0
        assert cpu <= 0.02, f"{cpu} s of CPU while 50 partial headers waited"
        assert sees_eof(socks[0], 3.0)
        took = time.monotonic() - t0
        assert 1.7 <= took <= 2.0 + 1.0, took
        for s in socks[1:]:
            assert sees_eof(s, 1.0)
    finally:
        for s in socks:
            s.close()
    d.wait_log(r"^warning: refused connection from 127\.0\.0\.1:\d+ \(fd \d+\): no complete "
               r"PROXY header within 2 s$", count=50)
    assert "accepted" not in d.log()


def test_peer_outside_proxy_from_is_closed_and_logged_at_a_limited_rate(epolld):
    d = start(epolld, proxy_from="10.9.9.0/24")
    with d.connect() as s:
        peer = f"127.0.0.1:{s.getsockname()[1]}"
        s.sendall(v2() + b"x")
        assert sees_eof(s, 2.0)
    d.wait_log(rf"^warning: refused connection from {esc(peer)} \(fd \d+\): not in proxy_from$")
    t0 = time.monotonic()
    for _ in range(999):
        with d.connect() as s:
            assert sees_eof(s, 2.0)
    fits = time.monotonic() - t0 < 4.5
    assert d.stop() == 0
    if fits:  # within one 5 s window: 500 lines, the rest counted
        assert d.count_log(r"^warning: refused connection from ") == 500
        assert d.count_log(r"^warning: 500 PROXY refusal messages suppressed") == 1, d.tail()


def test_proxy_from_lets_the_balancer_in(epolld):
    d = start(epolld, proxy_from="127.0.0.0/8")
    with d.connect() as s:
        s.sendall(v2() + b"x")
        assert recv_exact(s, 3) == b"Hi!"


def test_ipv6_listener_peer_is_matched_by_proxy_from(epolld):
    """A v4-mapped peer cannot reach an IPV6_V6ONLY listener, so the IPv6
    listener's peer here is ::1: it matches ::1 and no IPv4 rule."""
    d = start(epolld, listen=("[::1]",), proxy_from="::1")
    with d.connect() as s:
        s.sendall(v2() + b"x")
        assert recv_exact(s, 3) == b"Hi!"
    d.stop()
    d = start(epolld, listen=("[::1]",), proxy_from="127.0.0.1")
    with d.connect() as s:
        assert sees_eof(s, 2.0)
