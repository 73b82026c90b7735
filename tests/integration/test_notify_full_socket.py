"""A service manager that does not read its notify socket (src/notify.c).

The test fills the NOTIFY_SOCKET's queue with datagrams of its own, as a
busy PID 1 would let it fill, while the watchdog is on. A blocking
sd_notify() would then stop the loop at the next WATCHDOG=1. The daemon
must keep serving, keep a RELOADING=1/READY=1 that did not fit and send it
once there is room, and stop on SIGTERM.
"""
import signal
import socket
import time

from helpers import Client, free_ports


def fill(path):
    """Sends until the receiver's queue is full; returns how many fitted."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setblocking(False)
    for i in range(100000):
        try:
            s.sendto(b"FILLER=1", path)
        except BlockingIOError:
            s.close()
            return i
    raise AssertionError("the notify socket never filled")


def test_full_notify_socket_does_not_stall_the_loop(epolld):
    n = epolld.notify()
    d = epolld.start(listen=("127.0.0.1",), level=None, env={"WATCHDOG_USEC": "200000"},
                     notify=n)
    port = d.port
    assert fill(n.path) > 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:  # five watchdog pings that cannot go out
        with Client(port, timeout=2.0) as c:
            c.ask(timeout=2.0)
    d.signal(signal.SIGHUP)
    d.wait_text("reloaded configuration from ")
    with Client(port, timeout=2.0) as c:
        c.ask(timeout=2.0)
    assert "the service manager is not taking messages; retrying every 100 ms" in d.log()
    # PID 1 catches up: the reload's READY=1 comes, then the pings again.
    ready = n.next(lambda m: m.fields.get("READY") == "1", what="the retried READY=1")
    assert ready.text.startswith("READY=1\nSTATUS=")
    assert ready.pid == d.pid
    n.next(lambda m: m.text == "WATCHDOG=1", timeout=1.0, what="a ping after the queue drained")
    assert d.stop(timeout=2.0) == 0


def test_full_notify_socket_does_not_stall_a_reload_that_stores_a_listener(epolld):
    """A reload that binds a new address hands it to the fd store (FDSTORE=1
    with the fd) and takes the old one out (FDSTOREREMOVE=1): with PID 1's
    queue full, a blocking send would freeze the loop in the middle of it."""
    old, new = free_ports(2)
    n = epolld.notify()
    conf = epolld.config(listen=[f"127.0.0.1:{old}"])
    d = epolld.start(conf, level=None, notify=n)
    assert fill(n.path) > 0
    epolld.config(listen=[f"127.0.0.1:{new}"])
    d.signal(signal.SIGHUP)
    d.wait_text("reloaded configuration from ", timeout=5.0)
    with Client(new, timeout=2.0) as c:
        c.ask(timeout=2.0)
    log = d.log()
    assert (f"warning: cannot keep listener 127.0.0.1:{new} in the fd store: "
            "the service manager is not taking messages") in log, log
    assert (f"warning: cannot remove listen_127.0.0.1_{old} from the fd store: "
            "the service manager is not taking messages") in log, log
    assert d.stop(timeout=2.0) == 0
