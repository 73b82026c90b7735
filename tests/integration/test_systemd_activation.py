"""Socket activation (src/listener.c): sockets passed by
systemd-socket-activate (or by hand, with LISTEN_FDS/LISTEN_PID) replace the
listen setting; anything but a listening TCP socket is refused.

systemd-socket-activate listens first and execs the daemon in place (same
pid) on the first connection, so each test connects once to start it.
"""
import os
import signal
import socket

import pytest

from helpers import Client, fd_flags, free_port, free_ports, has_ipv6_loopback, hi, is_refused

O_NONBLOCK = os.O_NONBLOCK
O_CLOEXEC = 0o2000000  # as /proc/PID/fdinfo shows it


def test_passed_socket_replaces_listen_setting(epolld):
    passed, configured = free_ports(2)
    conf = epolld.config(listen=[f"127.0.0.1:{configured}"])
    d = epolld.start(conf, activate=[f"127.0.0.1:{passed}"])
    first = epolld.trigger(d, passed)

    first.ask()
    assert hi(passed) == b"Hi!"
    assert is_refused(configured)
    log = d.log()
    assert "info: socket activation: 1 socket(s) passed; ignoring the listen setting" in log
    assert f"info: using socket-activated listener 127.0.0.1:{passed} (fd 3)" in log
    assert "listening on" not in log  # nothing was bound from the config
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_blocking_passed_socket_is_made_nonblocking(epolld):
    """systemd-socket-activate passes a blocking socket; the daemon must set
    O_NONBLOCK itself, or its accept loop would block after the backlog
    drains and stop serving. Shown twice: the fd's flags, and 200 clients
    connected at once, each answered."""
    port = free_port()
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]),
                     activate=[f"127.0.0.1:{port}"])
    assert not fd_flags(d.pid, 3) & O_NONBLOCK, "premise: the passed socket is blocking"
    first = epolld.trigger(d, port)
    flags = fd_flags(d.pid, 3)
    assert flags & O_NONBLOCK
    assert flags & O_CLOEXEC

    clients = [first] + [Client(port) for _ in range(199)]
    try:
        for c in clients:
            c.send()
        for c in clients:
            assert c.recv_exact(3) == b"Hi!"
        for c in clients:  # and a second round on the same connections
            c.ask()
    finally:
        for c in clients[1:]:
            c.close()
    d.wait_text("accepted connection #200 ")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this machine")
def test_several_passed_sockets_all_answer(epolld):
    p4 = free_port()
    p6 = free_port("::1")
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]),
                     activate=[f"127.0.0.1:{p4}", f"[::1]:{p6}"])
    epolld.trigger(d, p6, "::1").ask()

    assert hi(p4) == b"Hi!"
    assert hi(p6, "::1") == b"Hi!"
    log = d.log()
    assert "info: socket activation: 2 socket(s) passed; ignoring the listen setting" in log
    assert f"info: using socket-activated listener 127.0.0.1:{p4} (fd 3)" in log
    assert f"info: using socket-activated listener [::1]:{p6} (fd 4)" in log
    assert "started: 2 listener(s)" in log


def test_passed_udp_socket_is_refused(epolld):
    port = free_port()
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]),
                     activate=[f"127.0.0.1:{port}"], datagram=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"x", ("127.0.0.1", port))
    assert d.wait_exit() == 71
    assert "err: socket activation: fd 3 is not a listening TCP socket" in d.log()
    assert " started: " not in d.log()


@pytest.mark.parametrize("kind", ["tcp-not-listening", "unix-listening"])
def test_passed_socket_of_wrong_kind_is_refused(epolld, kind):
    if kind == "tcp-not-listening":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(epolld.workdir / "u.sock"))
        s.listen()
    with s:
        d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]), fds=[s.fileno()],
                         wait=False)
        assert d.wait_exit() == 71
    assert "err: socket activation: fd 3 is not a listening TCP socket" in d.log()


def test_second_passed_socket_refused_after_first_accepted(epolld):
    """fd 3 fine, fd 4 a UDP socket: the whole start fails."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    with tcp, udp:
        d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]),
                         fds=[tcp.fileno(), udp.fileno()], wait=False)
        assert d.wait_exit() == 71
    log = d.log()
    assert "using socket-activated listener" in log and "(fd 3)" in log
    assert "err: socket activation: fd 4 is not a listening TCP socket" in log


def test_listen_pid_of_another_process_is_ignored(epolld):
    """LISTEN_PID names someone else: the fds are not for us, bind the config."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = free_port()
    with tcp:
        d = epolld.start(epolld.config(listen=[f"127.0.0.1:{port}"]), fds=[tcp.fileno()],
                         listen_pid=1, wait=False)
        d.wait_text(" started: ")
    assert hi(port) == b"Hi!"
    assert "socket activation" not in d.log()
    assert f"info: listening on 127.0.0.1:{port}" in d.log()


def test_listen_fds_larger_than_passed_does_not_touch_own_fds(epolld):
    """LISTEN_FDS=2 but only fd 3 is passed. Start must fail (71), and the
    daemon must not take a descriptor of its own for the missing fd 4 (it
    opens its epoll fd and timers before it looks at LISTEN_FDS, so fd 4 is
    its epoll fd: adopted, refused as "not a listening TCP socket", closed
    as a listener, then closed again at deinit -> EBADF warning)."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    with tcp:
        d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]), fds=[tcp.fileno()],
                         n_fds=2, wait=False)
        assert d.wait_exit() == 71
    log = d.log()
    assert "err: socket activation:" in log
    assert "Bad file descriptor" not in log, log


def test_too_many_passed_sockets_are_refused(epolld):
    ports = free_ports(65)
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]),
                     activate=[f"127.0.0.1:{p}" for p in ports])
    with Client(ports[0]):
        assert d.wait_exit() == 71
    assert "err: socket activation: 65 sockets passed, at most 64 are supported" in d.log()


def test_activated_daemon_without_config_file_runs_on_passed_socket(epolld):
    """No -c: the built-in default listen (127.0.0.1:8001) is ignored too."""
    port = free_port()
    d = epolld.start(activate=[f"127.0.0.1:{port}"])
    epolld.trigger(d, port).ask()
    if "using built-in defaults" not in d.log():
        pytest.skip("a default configuration file exists on this machine")
    assert "listening on 127.0.0.1:8001" not in d.log()
    d.reload()
    assert "running on built-in defaults: nothing to read" in d.log()
    assert hi(port) == b"Hi!"
