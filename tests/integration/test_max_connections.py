"""max_connections: at the limit the daemon stops accepting; new clients wait
in the kernel's backlog (their handshake completes) and are served as soon
as a slot frees."""
import time

from helpers import REPLY, exchange, recv_exact, recv_for


def test_eleventh_client_waits_until_a_slot_frees(epolld):
    d = epolld(max_connections=10)
    clients = [d.connect() for _ in range(10)]
    try:
        for i, s in enumerate(clients):
            assert exchange(s) == REPLY, f"client {i}"
        waiting = d.connect()  # the handshake completes in the backlog
        clients.append(waiting)
        waiting.sendall(b"let me in")
        d.wait_log(r"^info: max_connections \(10\) reached; accepting paused$")
        assert recv_for(waiting, 0.3) == b"", "the 11th client was served beyond the limit"
        assert d.count_log(r"^info: accepted connection #") == 10
        # The 10 are still served while the 11th waits.
        for s in clients[:10]:
            assert exchange(s) == REPLY

        clients.pop(0).close()
        start = time.monotonic()
        assert recv_exact(waiting, 3, timeout=2.0) == REPLY
        elapsed = time.monotonic() - start
        d.wait_log(r"^info: closed connection #1 \(closed by peer\) after 2 replies")
        d.wait_log(r"^info: accepting again \(9 connections\)$")
        d.wait_log(r"^info: accepted connection #11 ")
        assert elapsed < 2.0
    finally:
        for s in clients:
            s.close()


def test_limit_holds_over_many_turns(epolld):
    """Clients leave and arrive again and again; the daemon never holds more
    than max_connections and serves every one of them in the end."""
    d = epolld(max_connections=3)
    served = 0
    deadline = time.monotonic() + 20
    clients = [d.connect() for _ in range(6)]  # 3 served, 3 in the backlog
    try:
        for s in clients:
            s.sendall(b"x")
        for _ in range(30):
            assert time.monotonic() < deadline
            s = clients.pop(0)
            assert recv_exact(s, 3, timeout=3.0) == REPLY
            served += 1
            s.close()
            clients.append(d.connect())
            clients[-1].sendall(b"x")
        while clients:  # each close lets the next one in
            s = clients.pop(0)
            assert recv_exact(s, 3, timeout=3.0) == REPLY
            served += 1
            s.close()
    finally:
        for s in clients:
            s.close()
    assert served == 36
    d.wait_log(r"^info: closed connection #36 ", timeout=5)
    # The open count, from the log: accepted minus closed, never above 3.
    open_now = peak = 0
    for line in d.log().splitlines():
        if line.startswith("info: accepted connection #"):
            open_now += 1
        elif line.startswith("info: closed connection #"):
            open_now -= 1
        peak = max(peak, open_now)
    assert peak == 3
