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
import os
import re
import signal

from rxhelpers import ask, connect, free_ports, rx, wait_until  # noqa: F401

ACCEPTED = re.compile(r"^info: accepted connection #(\d+) from 127\.0\.0\.1:(\d+) ", re.M)


def write_ini(path, ports):
    lines = ["[server]"] + [f"listen = 127.0.0.1:{p}" for p in ports] + ["[log]", "level = info"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def stopped(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_event_from_before_a_reload_is_not_served_on_another_listener(rx, tmp_path):
    a, b, c = free_ports(3)
    conf = tmp_path / "three.ini"
    d = rx.start(conf=write_ini(conf, [a, b, c]))
    write_ini(conf, [b, c])
    os.kill(d.pid, signal.SIGSTOP)
    wait_until(lambda: stopped(d.pid), what="the daemon to stop")
    d.signal(signal.SIGHUP)
    to_b = connect(b)
    to_c = connect(c)
    os.kill(d.pid, signal.SIGCONT)
    d.wait_log("notice: reloaded configuration from ")
    d.wait_log("info: accepted connection #2 ")
    log = d.log()
    assert f"info: no longer listening on 127.0.0.1:{a}" in log
    order = [int(port) for _, port in ACCEPTED.findall(log)]
    assert order == [to_b.getsockname()[1], to_c.getsockname()[1]], log
    for s in (to_b, to_c):
        ask(s)
        s.close()
