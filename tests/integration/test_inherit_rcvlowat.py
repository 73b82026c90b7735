"""A connection adopted without a state record (src/conn.c conn_adopt) while
its PROXY header was half read: header.c had raised SO_RCVLOWAT to one past
the bytes it saw, and only the state record said so. Without the record the
socket's SO_RCVLOWAT is the only trace left. With proxy_protocol = no it
must go back to 1, or a later short read is never reported (the client's
ping went unanswered); with proxy_protocol = yes the header phase resumes
where the socket says it was, and the header completes.

The layout is what the previous image would have left: the server end of a
loopback connection with `PROXY TCP4 1.2.3.4 5.6` (22 bytes) in its queue
and SO_RCVLOWAT = 22, passed as "conn" with no "state".
"""
import os
import socket

from helpers import inq, recv_exact, recv_for, tcp_pair, wait_until

PARTIAL = b"PROXY TCP4 1.2.3.4 5.6"
REST = b".7.8 40000 8001\r\n"


def adopt_half_header(epolld, **server):
    c, s = tcp_pair()
    c.sendall(PARTIAL)
    wait_until(lambda: inq(s) == len(PARTIAL), what="the header bytes in the server's queue")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, len(PARTIAL))
    fd = os.dup(s.fileno())
    s.close()
    d = epolld.start(listen=("127.0.0.1",), level="debug", server=server, fds=[fd],
                     names=["conn"])
    os.close(fd)
    d.wait_text("notice: adopted 1 of 1 inherited connection(s)")
    return d, c


def test_without_proxy_protocol_a_raised_lowat_is_reset(epolld):
    d, c = adopt_half_header(epolld)
    with c:
        assert recv_exact(c, 3) == b"Hi!"  # the 22 bytes in flight: one read
        c.sendall(b"ping")  # 4 bytes, below the old SO_RCVLOWAT
        assert recv_exact(c, 3, timeout=3.0) == b"Hi!"
        assert recv_for(c, 0.1) == b""
    assert "refused" not in d.log()


def test_with_proxy_protocol_the_header_phase_resumes(epolld):
    d, c = adopt_half_header(epolld, proxy_protocol="yes", proxy_timeout=30)
    with c:
        assert recv_for(c, 0.3) == b""  # half a header: no reply
        c.sendall(REST + b"ping")
        assert recv_exact(c, 3, timeout=3.0) == b"Hi!"  # header and ping: one read
        assert recv_for(c, 0.1) == b""
        d.wait_log(r"^info: accepted connection #1 from 1\.2\.3\.4:40000 via 127\.0\.0\.1:\d+ "
                   r"\(PROXY v1, fd \d+\)$")
        c.sendall(b"x")
        assert recv_exact(c, 3) == b"Hi!"
