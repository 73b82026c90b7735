"""NOTIFY_SOCKET in a form epolld does not parse (src/notify.c): only a path
or an abstract name is sent to without waiting. Any other (vsock:..., which
newer libsystemd understands) would go through libsystemd's blocking send,
in the loop. The daemon warns once at the start, sends only READY=1 there
and STOPPING=1 at the stop (through libsystemd, outside the loop), and
nothing from the loop: a reload and traffic log no notify failure.
"""
import signal

from helpers import Client, wait_until

FOREIGN = "vsock:1:2"
WARNING = (f"warning: NOTIFY_SOCKET={FOREIGN}: not a path or an abstract socket name; "
           "only libsystemd can send there, and it waits: READY=1 at the start and "
           "STOPPING=1 only, no reload, status or watchdog messages")


def test_a_foreign_notify_socket_warns_once_and_serves(epolld):
    d = epolld.start(listen=("127.0.0.1",), env={"NOTIFY_SOCKET": FOREIGN,
                                                  "WATCHDOG_USEC": "2000000"})
    started = d.log()
    assert started.count(WARNING) == 1, started
    with Client(d.port) as c:
        for _ in range(3):
            c.ask()
    d.reload()
    with Client(d.port) as c:
        c.ask()
    wait_until(lambda: "reloaded configuration" in d.log(), what="the reload")
    after = d.log()[len(started):]
    assert "warning" not in after, after  # nothing tried from the loop
    assert "watchdog enabled" not in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert d.count(WARNING) == 1
