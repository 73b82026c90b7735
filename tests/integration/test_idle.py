"""idle_timeout: a connection that stays silent is closed by the daemon after
about idle_timeout seconds; one that keeps talking is never closed."""
import threading
import time

from conftest import REPLY, exchange, sees_eof


def test_silent_connection_is_closed(epolld):
    d = epolld(idle_timeout=1)
    with d.connect() as s:
        start = time.monotonic()
        assert sees_eof(s, timeout=4.0), "no EOF within 4 s"
        elapsed = time.monotonic() - start
    assert 0.9 <= elapsed <= 3.0, f"closed after {elapsed:.2f} s"
    d.wait_log(r"^info: closed connection #1 \(idle timeout\) after 0 replies \(fd \d+\)$")


def talk(sock, duration, interval=0.3):
    """Sends one message every INTERVAL for DURATION seconds. Returns the
    number of replies and the error that ended the talk early (None if the
    connection stayed open and answered throughout)."""
    n = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        try:
            assert exchange(sock, timeout=1.0) == REPLY
        except (AssertionError, OSError) as e:
            return n, f"{e} after {n} replies"
        n += 1
        time.sleep(interval)
    return n, None


def test_active_connection_is_not_closed(epolld):
    d = epolld(idle_timeout=1)
    with d.connect() as s:
        replies, error = talk(s, 3.0)
        assert error is None, f"{error}; log:\n{d.tail()}"
        assert replies >= 5
        assert exchange(s) == REPLY
    assert "idle timeout" not in d.log()


def test_silent_closed_while_active_kept(epolld):
    d = epolld(idle_timeout=1)
    with d.connect() as silent, d.connect() as active:
        result = {}
        t = threading.Thread(target=lambda: result.update(talk=talk(active, 3.0)))
        start = time.monotonic()
        t.start()
        try:
            assert sees_eof(silent, timeout=4.0), "the silent connection was not closed"
            elapsed = time.monotonic() - start
        finally:
            t.join(10)
        assert 0.9 <= elapsed <= 3.0, f"silent one closed after {elapsed:.2f} s"
        replies, error = result.get("talk", (0, "no result"))
        assert error is None, f"the active one: {error}; log:\n{d.tail()}"
        assert replies >= 5
    d.wait_log(r"^info: closed connection #1 \(idle timeout\) after 0 replies")
    assert d.count_log(r"\(idle timeout\)") == 1, d.tail()


def test_idle_timeout_zero_never_closes(epolld):
    d = epolld(idle_timeout=0)
    with d.connect() as s:
        assert not sees_eof(s, timeout=1.5)
        assert exchange(s) == REPLY
