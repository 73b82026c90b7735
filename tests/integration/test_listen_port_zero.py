"""A configured port 0 keeps its socket (src/listener.c, listener_serves()).

With `listen = HOST:0` the kernel picks the port once. Whatever hands the
socket on afterwards — a reload (SIGHUP), a re-exec (SIGUSR2: the new image
adopts it by getsockname()), a restart through systemd's fd store (the new
process adopts it the same way) — must keep that socket: one rule, "a
configured port 0 matches a socket of the same family and host on any
port". Replacing it would reset the clients waiting in its backlog and
refuse every new client of the port they were using.

Clients are made to wait in the backlog deterministically: the daemon is
stopped (SIGSTOP) while they connect and the signal is sent, so that the
signal and the listener are in the same epoll_wait batch, signal first.
"""
import re
import signal
import socket

from helpers import ask, connect, frozen, ino, socket_fd_of

LISTENING = re.compile(r"^info: listening on 127\.0\.0\.1:(\d+)$", re.M)


def write_ini(epolld, name, *listen):
    return epolld.config(name, listen=listen, level="debug")


def test_reexec_keeps_the_port_0_listener_and_its_backlog(epolld):
    conf = write_ini(epolld, "zero.ini", "127.0.0.1:0")
    d = epolld.start(conf)
    port = int(LISTENING.search(d.log()).group(1))
    served = connect(port)
    ask(served)
    with frozen(d.pid):
        d.signal(signal.SIGUSR2)
        waiting = connect(port)  # queued in the listener's backlog across the exec
    d.wait_ready(2)
    log = d.log()
    assert "no longer listening" not in log, log
    assert LISTENING.findall(log) == [str(port)], log
    ask(waiting)
    ask(served)
    with connect(port) as fresh:
        ask(fresh)
    for c in (served, waiting):
        c.close()


def test_reload_keeps_the_port_0_listener(epolld):
    conf = write_ini(epolld, "zero.ini", "127.0.0.1:0")
    d = epolld.start(conf)
    port = int(LISTENING.search(d.log()).group(1))
    with frozen(d.pid):
        d.signal(signal.SIGHUP)
        waiting = connect(port)
    d.wait_text("notice: reloaded configuration from ")
    log = d.log()
    assert "no longer listening" not in log, log
    assert LISTENING.findall(log) == [str(port)], log
    ask(waiting)
    waiting.close()


def _listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, s.getsockname()[1]


def test_stored_listener_for_port_0_is_adopted_after_a_restart(epolld):
    """What a systemd restart hands over: our own listener in the fd store,
    named after the configured address (listen_127.0.0.1_0)."""
    stored, port = _listening()
    stored_ino = ino(stored)
    waiting = connect(port)
    conf = write_ini(epolld, "zero.ini", "127.0.0.1:0")
    d = epolld.start(conf, fds=[stored.fileno()], names=["listen_127.0.0.1_0"])
    stored.close()
    log = d.log()
    assert "listening on" not in log, log
    assert socket_fd_of(d.pid, stored_ino) == 3
    ask(waiting)
    waiting.close()
    with connect(port) as fresh:
        ask(fresh)


def test_explicit_port_keeps_its_own_socket_next_to_a_port_0(epolld):
    """Exact ports are matched first: `127.0.0.1:0`, listed first, must not
    take the socket `127.0.0.1:P` names (P would then be bound twice and the
    start fail), but the other stored one."""
    named, port = _listening()
    other, other_port = _listening()
    inodes = ino(named), ino(other)
    conf = write_ini(epolld, "both.ini", "127.0.0.1:0", f"127.0.0.1:{port}")
    d = epolld.start(conf, fds=[named.fileno(), other.fileno()],
                 names=[f"listen_127.0.0.1_{port}", "listen_127.0.0.1_0"])
    named.close()
    other.close()
    log = d.log()
    assert "listening on" not in log, log
    assert [socket_fd_of(d.pid, i) for i in inodes] == [3, 4]
    for p in (port, other_port):
        with connect(p) as c:
            ask(c)
