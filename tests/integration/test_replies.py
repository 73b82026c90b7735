"""Every read that returns data is answered with exactly "Hi!": one client,
many in a row, many at once, a large burst, and clients that leave with a
FIN or an RST."""
import select
import socket
import time

from helpers import (REPLY, assert_only_replies, exchange, recv_exact, recv_for,
                      recv_until_eof, reset)


def test_one_message_gets_exactly_hi_and_nothing_more(epolld):
    d = epolld()
    with d.connect() as s:
        s.sendall(b"hello\n")
        assert recv_exact(s, 3) == b"Hi!"
        assert recv_for(s, 0.2) == b"", "more than one reply to one message"
        cport = s.getsockname()[1]
    d.wait_log(rf"^info: accepted connection #1 from 127\.0\.0\.1:{cport} \(fd \d+\)$")
    d.wait_log(r"^info: closed connection #1 \(closed by peer\) after 1 replies in \d+\.\d{3} s; "
               rf"client 127\.0\.0\.1:{cport} \(fd \d+\)$")


def test_each_message_of_a_conversation_is_answered(epolld):
    d = epolld()
    with d.connect() as s:
        for i in range(20):
            assert exchange(s, f"message {i}\n".encode()) == REPLY
        assert recv_for(s, 0.2) == b""
    d.wait_log(r"^info: closed connection #1 \(closed by peer\) after 20 replies")


def test_500_sequential_clients(epolld):
    d = epolld()
    deadline = time.monotonic() + 60
    for i in range(500):
        assert time.monotonic() < deadline, f"only {i} clients served in 60 s"
        with d.connect() as s:
            assert exchange(s) == REPLY, f"client {i}"
    d.wait_log(r"^info: closed connection #500 \(closed by peer\) after 1 replies", timeout=10)
    assert d.count_log(r"^info: closed connection #\d+ \(closed by peer\) after 1 replies") == 500


def test_200_concurrent_clients(epolld):
    d = epolld()
    socks = [d.connect() for _ in range(200)]
    try:
        for s in socks:
            s.sendall(b"ping")
        got = {s: b"" for s in socks}
        deadline = time.monotonic() + 10
        waiting = set(socks)
        while waiting and time.monotonic() < deadline:
            for s in select.select(list(waiting), [], [], 0.5)[0]:
                chunk = s.recv(16)
                got[s] += chunk
                if not chunk or len(got[s]) >= 3:
                    waiting.discard(s)
        assert not waiting, f"{len(waiting)} of 200 clients got no full reply within 10 s"
        # Anything extra would have arrived by now or in the next 200 ms.
        for s in select.select(socks, [], [], 0.2)[0]:
            got[s] += s.recv(16)
        wrong = [v for v in got.values() if v != REPLY]
        assert not wrong, f"{len(wrong)} clients got something other than one 'Hi!': {wrong[:5]}"
    finally:
        for s in socks:
            s.close()
    d.wait_log(r"^info: closed connection #\d+ \(closed by peer\) after 1 replies", count=200,
               timeout=10)


def test_1mib_burst_is_answered_with_whole_replies(epolld):
    d = epolld()
    with d.connect(timeout=10) as s:
        s.sendall(b"x" * (1 << 20))
        s.shutdown(socket.SHUT_WR)
        # EOF comes once the daemon has read everything and flushed its replies.
        data = recv_until_eof(s, timeout=10)
    assert len(data) >= 3
    assert_only_replies(data)
    m = d.wait_log(r"^info: closed connection #1 \(closed by peer\) after (\d+) replies")
    assert int(m[1]) == len(data) // 3, "the daemon counted other replies than it sent"


def test_clients_that_close_or_reset_do_not_disturb_the_daemon(epolld):
    d = epolld()
    with d.connect() as s:
        assert exchange(s) == REPLY
    d.wait_log(r"^info: closed connection #1 \(closed by peer\) after 1 replies")

    s = d.connect()
    assert exchange(s) == REPLY
    reset(s)
    d.wait_log(r"^info: closed connection #2 \(reset by peer\) after 1 replies")

    # Reset before sending anything, once the daemon holds the connection.
    s = d.connect()
    d.wait_log(r"^info: accepted connection #3 ")
    reset(s)
    d.wait_log(r"^info: closed connection #3 \(reset by peer\) after 0 replies")

    # Close with the reply still unread: the client's kernel answers it with an RST.
    s = d.connect()
    s.sendall(b"bye")
    d.wait_log(r"^info: accepted connection #4 ")
    s.close()
    d.wait_log(r"^info: closed connection #4 \((closed|reset) by peer\) after 1 replies")

    for _ in range(3):
        with d.connect() as s:
            assert exchange(s) == REPLY
    assert d.proc.poll() is None
