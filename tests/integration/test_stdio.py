"""A daemon started with its standard descriptors closed (`epolld 2>&-`, or
a careless supervisor) must not hand fd 0, 1 or 2 to a socket: a log line
written to "stderr" would then land in a client's connection."""
import os
import socket

from helpers import REPLY, exchange, recv_for, wait_until


def test_closed_stdio_never_becomes_a_socket(epolld):
    d = epolld.start(listen=("127.0.0.1",), level="debug", close_stdio=True, wait=False)
    port = d.port

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                return exchange(s) == REPLY
        except OSError:
            return False
    wait_until(answers, 10.0, "the daemon to answer")
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{d.pid}/fd/{fd}") == "/dev/null", fd
    # Every accept, read and close is logged at debug; none of it may
    # reach a client.
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        for _ in range(20):
            assert exchange(s, b"x") == REPLY
        assert recv_for(s, 0.2) == b""
    assert d.stop() == 0
