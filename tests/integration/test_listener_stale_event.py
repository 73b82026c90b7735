"""A listener event queued before a reload in the same batch is not served
on whichever listener has its index afterwards (src/listener.c: the
listener set's generation in the tag, src/loop.h).

How the race is made deterministic: the daemon is stopped (SIGSTOP); then
SIGHUP is sent (the signalfd joins epoll's ready list first), a client
connects to listener B (index 1) and one to C (index 2), and the daemon is
continued. Its next epoll_wait returns [signal, B, C] in that order (epoll's
ready list is FIFO). The reload removes A, so B becomes index 0 and C
index 1, while the batch still holds B's event tagged 1 and C's tagged 2.

Without the guard, B's event (index 1) accepts on C, so C's client is
accepted first. With it, both stale events are dropped; the listeners are
level-triggered and come back with their new tags in the next batch, in
their order: B's client is accepted first, then C's.
"""
import signal

from helpers import ACCEPTED, ask, connect, free_ports, frozen


def write_ini(epolld, ports):
    return epolld.config("three.ini", listen=[f"127.0.0.1:{p}" for p in ports], level="info")


def test_event_from_before_a_reload_is_not_served_on_another_listener(epolld):
    a, b, c = free_ports(3)
    d = epolld.start(write_ini(epolld, [a, b, c]))
    write_ini(epolld, [b, c])
    with frozen(d.pid):
        d.signal(signal.SIGHUP)
        to_b = connect(b)
        to_c = connect(c)
    d.wait_text("notice: reloaded configuration from ")
    d.wait_text("info: accepted connection #2 ")
    log = d.log()
    assert f"info: no longer listening on 127.0.0.1:{a}" in log
    order = [int(port) for _, port in ACCEPTED.findall(log)]
    assert order == [to_b.getsockname()[1], to_c.getsockname()[1]], log
    for s in (to_b, to_c):
        ask(s)
        s.close()
