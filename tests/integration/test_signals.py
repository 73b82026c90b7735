"""SIGTERM and SIGINT: the daemon closes every connection and exits 0 within
a second."""
import signal
import time

import pytest

from helpers import REPLY, exchange, sees_eof


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_stop_signal_with_open_connections(epolld, signo):
    d = epolld()
    clients = [d.connect() for _ in range(5)]
    try:
        for s in clients:
            assert exchange(s) == REPLY
        idle = d.connect()  # accepted, never sent anything
        clients.append(idle)
        d.wait_log(r"^info: accepted connection #6 ")
        start = time.monotonic()
        d.signal(signo)
        status = d.wait_exit(timeout=2.0)
        elapsed = time.monotonic() - start
        assert status == 0
        assert elapsed < 1.0, f"exit took {elapsed:.2f} s"
        for i, s in enumerate(clients):
            assert sees_eof(s, timeout=1.0), f"client {i} saw no EOF"
    finally:
        for s in clients:
            s.close()
    name = signal.Signals(signo).name
    d.wait_log(rf"^notice: received {name}, stopping$")
    d.wait_log(r"^notice: stopping: closing 6 connection\(s\); 6 accepted, 5 replies in all$")
    d.wait_log(r"^info: closed 6 connection\(s\) at shutdown$")


def test_stop_signal_without_connections(epolld):
    d = epolld()
    start = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=2.0) == 0
    assert time.monotonic() - start < 1.0


def test_reload_and_reexec_do_not_cancel_a_stop(epolld):
    """SIGINT and SIGUSR2 pending together: SIGINT (the lower number) is read
    first and starts the stop; the SIGUSR2 read after it must not re-execute,
    which would cancel the stop."""
    d = epolld()
    with d.connect() as s:
        assert exchange(s) == REPLY
        d.signal(signal.SIGSTOP)  # let all three queue up
        for signo in (signal.SIGINT, signal.SIGUSR2):
            d.signal(signo)
        d.signal(signal.SIGCONT)
        assert d.wait_exit(timeout=2.0) == 0
        assert sees_eof(s, timeout=1.0)
    d.wait_log(r"^notice: received SIGINT, stopping$")
    d.wait_log(r"^notice: ignoring SIGUSR2: stopping$")
    assert "re-executing" not in d.log()
