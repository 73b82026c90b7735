"""sd_notify (src/notify.c) against a test NOTIFY_SOCKET: READY=1 with the
counters, rate-limited STATUS= after traffic (none while idle), RELOADING=1
with MONOTONIC_USEC= then READY=1 on every reload path, STOPPING=1, and the
watchdog timer at half of WATCHDOG_USEC."""
import signal
import socket
import time

import pytest

from helpers import Client, free_port, free_ports, hi, monotonic_usec

def statuses(msgs):
    """Plain STATUS= messages (not READY=1 / STOPPING=1 that carry one too)."""
    return [m for m in msgs if set(m.fields) == {"STATUS"}]


def watchdogs(msgs):
    return [m for m in msgs if m.fields.get("WATCHDOG") == "1"]


def start(epolld, port=None, **kw):
    """The daemon on `port` with a notify socket; returns after READY=1."""
    port = port or free_port()
    n = epolld.notify()
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{port}"]), notify=n, **kw)
    return d, n, port


def test_ready_with_zero_counters_once_listening(epolld):
    d, n, port = start(epolld)
    ready = next(m for m in n.messages if "READY" in m.fields)
    assert ready.text == "READY=1\nSTATUS=0 connections, 0 replies"
    assert ready.pid == d.pid
    # READY=1 means listening: a client is served right away.
    assert hi(port) == b"Hi!"


def test_no_status_while_idle(epolld):
    d, n, port = start(epolld)
    msgs = [m for m in n.collect(2.0) if "STATUS" in m.fields or "WATCHDOG" in m.fields]
    assert msgs == [], msgs


def test_status_after_traffic(epolld):
    d, n, port = start(epolld)
    with Client(port) as c:
        c.ask()
        c.ask()
        t0 = time.monotonic()
        m = n.next(lambda m: set(m.fields) == {"STATUS"}, timeout=3.0, what="STATUS= after traffic")
        assert m.t - t0 <= 2.0, f"STATUS came {m.t - t0:.2f}s after the traffic"
        assert m.text == "STATUS=1 connections, 2 replies"
        assert m.pid == d.pid
    # The close moves the counters too: one more status, then silence.
    m = n.next(lambda m: set(m.fields) == {"STATUS"}, timeout=3.0, what="STATUS= after close")
    assert m.text == "STATUS=0 connections, 2 replies"
    assert statuses(n.collect(1.5)) == []


def test_status_is_rate_limited_to_one_per_second(epolld):
    d, n, port = start(epolld)
    replies = 0
    with Client(port) as c:
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            c.ask()
            replies += 1
            n.poll()
            time.sleep(0.02)
    n.collect(2.5)  # the last status (the close) comes at most 1 s later
    msgs = statuses(n.messages)
    assert 3 <= len(msgs) <= 6, msgs
    gaps = [b.t - a.t for a, b in zip(msgs, msgs[1:])]
    assert min(gaps) >= 0.8, gaps
    counts = [int(m.fields["STATUS"].split(", ")[1].split()[0]) for m in msgs]
    assert counts == sorted(counts) and counts[-1] == replies, (counts, replies)
    assert msgs[-1].text == f"STATUS=0 connections, {replies} replies"


def test_reload_sends_reloading_with_monotonic_usec_then_ready(epolld):
    d, n, port = start(epolld)
    before = monotonic_usec()
    d.signal(signal.SIGHUP)
    rel = n.next_with("RELOADING", "1")
    after = monotonic_usec()
    assert rel.pid == d.pid
    assert set(rel.fields) == {"RELOADING", "MONOTONIC_USEC"}, rel
    assert rel.fields["MONOTONIC_USEC"].isdigit(), rel
    usec = int(rel.fields["MONOTONIC_USEC"])
    assert before <= usec <= after, (before, usec, after)
    ready = n.next_with("READY", "1")
    assert ready.text == "READY=1\nSTATUS=0 connections, 0 replies"
    assert hi(port) == b"Hi!"


def test_failed_reload_still_sends_ready_with_the_error(epolld):
    d, n, port = start(epolld)
    conf = epolld.config(listen=[f"127.0.0.1:{port}"], max_events=0)  # line 3
    d.signal(signal.SIGHUP)
    n.next_with("RELOADING", "1")
    ready = n.next_with("READY", "1")
    assert ready.text == (f"READY=1\nSTATUS=reload failed: {conf}:3: "
                          "max_events: 0 is out of range (1..65536)")
    assert hi(port) == b"Hi!"


def test_reload_failing_on_a_busy_port_sends_ready_with_the_error(epolld):
    port, busy_port = free_ports(2)
    d, n, _ = start(epolld, port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        epolld.config(listen=[f"127.0.0.1:{port}", f"127.0.0.1:{busy_port}"])
        d.signal(signal.SIGHUP)
        n.next_with("RELOADING", "1")
        ready = n.next_with("READY", "1")
    assert ready.text == ("READY=1\nSTATUS=reload failed: cannot open a new listener: "
                          "Address already in use")


def test_stopping_on_sigterm(epolld):
    d, n, port = start(epolld)
    d.signal(signal.SIGTERM)
    m = n.next_with("STOPPING", "1")
    assert m.pid == d.pid
    assert m.text == "STOPPING=1\nSTATUS=stopping"
    assert d.wait_exit() == 0


def test_full_sequence_in_order(epolld):
    d, n, port = start(epolld)
    d.reload(n)
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    n.poll(0.2)
    states = ("READY", "RELOADING", "STOPPING")  # other messages (FDSTORE=1...) may come too
    kinds = [k for m in n.messages for k in m.fields if k in states]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"], n.messages


def test_watchdog_pings_at_half_the_interval(epolld):
    d, n, port = start(epolld, env={"WATCHDOG_USEC": "400000"}, watchdog_pid_self=True)
    pings = watchdogs(n.collect(2.0))
    assert 7 <= len(pings) <= 13, pings
    assert all(m.pid == d.pid and m.text == "WATCHDOG=1" for m in pings), pings
    assert "info: watchdog enabled: pinging every 200 ms" in d.log()


def test_watchdog_without_watchdog_pid(epolld):
    d, n, port = start(epolld, env={"WATCHDOG_USEC": "400000"})
    assert 7 <= len(watchdogs(n.collect(2.0))) <= 13


def test_watchdog_keeps_pinging_through_traffic_and_reload(epolld):
    d, n, port = start(epolld, env={"WATCHDOG_USEC": "400000"})
    with Client(port) as c:
        c.ask()
        d.reload(n)
        c.ask()
    assert 3 <= len(watchdogs(n.collect(1.0))) <= 7


def test_watchdog_for_another_pid_is_not_ours(epolld):
    d, n, port = start(epolld, env={"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"})
    assert watchdogs(n.collect(1.5)) == []
    assert "watchdog enabled" not in d.log()
    assert hi(port) == b"Hi!"


@pytest.mark.parametrize("usec", ["0", "soon", ""])
def test_invalid_or_zero_watchdog_usec_is_ignored(epolld, usec):
    d, n, port = start(epolld, env={"WATCHDOG_USEC": usec})
    assert watchdogs(n.collect(0.8)) == []
    assert hi(port) == b"Hi!"
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_without_notify_socket_nothing_breaks(epolld):
    port = free_port()
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{port}"]), env={"WATCHDOG_USEC": "400000"})
    with Client(port) as c:
        c.ask()
        d.reload()
        c.ask()
    assert hi(port) == b"Hi!"
    assert "sd_notify" not in d.log()
    assert d.stop() == 0


def test_notify_socket_nobody_listens_on_keeps_serving(epolld):
    """NOTIFY_SOCKET names a path with no socket (the manager went away):
    notifications fail, serving does not."""
    port = free_port()
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{port}"]),
                 env={"NOTIFY_SOCKET": str(epolld.workdir / "no-such-socket")})
    with Client(port) as c:
        c.ask()
        d.reload()
        c.ask()
    assert d.stop() == 0


def test_notify_through_socket_activation(epolld):
    """systemd-socket-activate passes NOTIFY_SOCKET on (-E); the daemon it
    execs in place notifies from the same pid."""
    port = free_port()
    n = epolld.notify()
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]),
                     activate=[f"127.0.0.1:{port}"], notify=n)
    epolld.trigger(d, port, notify=n).ask()
    d.reload(n)
    d.signal(signal.SIGTERM)
    assert n.next_with("STOPPING", "1").pid == d.pid
    assert d.wait_exit() == 0
