"""Reload on SIGHUP (src/server.c, src/listener.c): a valid file is swapped
in whole, listeners that stay keep their socket, a bad file or a listener
that cannot be opened changes nothing; under socket activation the passed
listeners stay."""
import signal
import socket
import time

from helpers import Client, free_port, free_ports, hi, is_refused, listening_inode


def start(epolld, ports, **kw):
    conf = epolld.config(listen=[f"127.0.0.1:{p}" for p in ports], **kw)
    return epolld.start(conf), conf


def test_listen_port_change(epolld):
    old, new = free_ports(2)
    d, _ = start(epolld, [old])
    with Client(old) as before:
        before.ask()
        epolld.config(listen=[f"127.0.0.1:{new}"])
        d.reload()
        assert "notice: reloaded configuration from " in d.log()
        before.ask()  # opened before the reload, still served
        assert hi(new) == b"Hi!"
        assert is_refused(old)
        before.ask()
    log = d.log()
    assert f"info: no longer listening on 127.0.0.1:{old}" in log
    assert f"info: listening on 127.0.0.1:{new}" in log
    assert d.stop() == 0


def test_added_port_keeps_the_staying_socket_and_its_queue(epolld):
    """max_connections = 1: a second client waits in the kernel's backlog.
    A reload that adds a port must keep the staying socket (same inode), so
    the queued client is accepted once the first one leaves."""
    stay, added = free_ports(2)
    d, _ = start(epolld, [stay], max_connections=1)
    inode = listening_inode(d.pid, stay)
    assert inode
    first = Client(stay)
    first.ask()
    queued = Client(stay)  # completes in the backlog, not accepted
    queued.send()
    d.wait_text("max_connections (1) reached; accepting paused")
    epolld.config(listen=[f"127.0.0.1:{stay}", f"127.0.0.1:{added}"], max_connections=1)
    d.reload()
    assert listening_inode(d.pid, stay) == inode
    assert listening_inode(d.pid, added)
    assert "no longer listening" not in d.log()
    first.close()
    assert queued.recv_exact(3) == b"Hi!"
    queued.close()
    d.wait_text("closed connection #2 ")
    assert hi(added) == b"Hi!"
    assert hi(stay) == b"Hi!"


def test_reload_raising_max_connections_serves_the_queue(epolld):
    port = free_port()
    d, _ = start(epolld, [port], max_connections=1)
    with Client(port) as first, Client(port) as queued:
        first.ask()
        queued.send()
        d.wait_text("accepting paused")
        epolld.config(listen=[f"127.0.0.1:{port}"], max_connections=10)
        d.reload()
        assert queued.recv_exact(3) == b"Hi!"
        first.ask()


def test_invalid_file_keeps_the_previous_configuration(epolld):
    port = free_port()
    d, conf = start(epolld, [port])
    with Client(port) as c:
        c.ask()
        # line 3: [server], listen, max_events
        epolld.config(listen=[f"127.0.0.1:{port}"], max_events=0)
        d.reload()
        assert d.running()
        c.ask()
        assert hi(port) == b"Hi!"
    log = d.log()
    assert f"err: {conf}:3: max_events: 0 is out of range (1..65536)\n" in log
    assert "err: reload failed, keeping the previous configuration\n" in log
    assert "reloaded configuration" not in log
    # and a later good reload still works
    new = free_port()
    epolld.config(listen=[f"127.0.0.1:{new}"])
    d.reload()
    assert hi(new) == b"Hi!"
    assert is_refused(port)


def test_invalid_file_changes_nothing_else_either(epolld):
    """The bad line comes after a level change: the level must not apply."""
    port = free_port()
    d, conf = start(epolld, [port])
    with open(conf, "w") as f:
        f.write(f"[log]\nlevel = notice\n[server]\nlisten = 127.0.0.1:{port}\nbacklog = -1\n")
    d.reload()
    assert f"err: {conf}:5: backlog: '-1' is not a number" in d.log()
    assert hi(port) == b"Hi!"
    d.wait_text("accepted connection #1 ")


def test_log_level_notice_stops_connection_lines(epolld):
    port = free_port()
    d, _ = start(epolld, [port])
    assert hi(port) == b"Hi!"
    d.wait_text("closed connection #1 ")
    epolld.config(listen=[f"127.0.0.1:{port}"], level="notice")
    d.reload()
    with Client(port) as c:
        c.ask()  # the accept line, if any, is written before the reply
    with Client(port) as c:
        c.ask()
    epolld.config(listen=[f"127.0.0.1:{port}"], level="info")
    d.reload()
    assert hi(port) == b"Hi!"
    d.wait_text("closed connection #4 ")
    log = d.log()
    assert "accepted connection #2 " not in log and "accepted connection #3 " not in log
    assert "closed connection #2 " not in log and "closed connection #3 " not in log
    assert "accepted connection #4 " in log
    assert "notice: reloaded configuration from " in log


def test_idle_timeout_set_by_reload_closes_a_silent_connection(epolld):
    port = free_port()
    d, _ = start(epolld, [port])
    with Client(port) as silent:
        silent.ask()
        epolld.config(listen=[f"127.0.0.1:{port}"], idle_timeout=1)
        d.reload()
        t0 = time.monotonic()
        assert silent.wait_closed(timeout=4.0), "silent connection open 4 s after the reload"
        closed_at = time.monotonic() - t0
    assert 0.7 <= closed_at <= 3.0, f"closed {closed_at:.2f}s after the reload"
    d.wait_text("closed connection #1 (idle timeout)")
    assert hi(port) == b"Hi!"  # new connections are still welcome


def test_idle_timeout_set_by_reload_spares_a_talking_connection(epolld):
    """One connection that talks every 0.3 s for 3 s after a reload that
    sets idle_timeout = 1 must never be closed. (It is the newest, i.e. the
    tail of the idle list, which is where activity has to be recorded too.)"""
    port = free_port()
    d, _ = start(epolld, [port])
    with Client(port) as talking:
        talking.ask()
        epolld.config(listen=[f"127.0.0.1:{port}"], idle_timeout=1)
        d.reload()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            assert not talking.wait_closed(timeout=0.3), (
                f"active connection closed {time.monotonic() - t0:.2f}s after the reload:\n"
                + d.log())
            talking.ask()
    assert "(idle timeout)" not in d.log()


def test_new_address_in_use_fails_and_changes_nothing(epolld):
    """The new file keeps nothing of the old one: an added free port and a
    busy one. The reload fails as a whole: the free port is not left open,
    the old one still answers, the level change does not apply."""
    old, fresh, busy_port = free_ports(3)
    d, conf = start(epolld, [old])
    with socket.socket() as busy, Client(old) as c:
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        c.ask()
        epolld.config(listen=[f"127.0.0.1:{fresh}", f"127.0.0.1:{busy_port}"], level="notice")
        d.reload()
        c.ask()
        assert hi(old) == b"Hi!"
        assert is_refused(fresh)
    log = d.log()
    assert f"err: cannot listen on 127.0.0.1:{busy_port}: Address already in use" in log
    assert "err: reload failed, keeping the previous configuration" in log
    assert "no longer listening" not in log
    d.wait_text("accepted connection #2 ")  # still at level info
    assert d.stop() == 0


def test_reload_under_socket_activation_keeps_passed_listeners(epolld):
    passed, configured, other = free_ports(3)
    conf = epolld.config(listen=[f"127.0.0.1:{configured}"])
    d = epolld.start(conf, activate=[f"127.0.0.1:{passed}"])
    first = epolld.trigger(d, passed)
    first.ask()
    inode = listening_inode(d.pid, passed)
    epolld.config(listen=[f"127.0.0.1:{other}"], idle_timeout=0, level="info")
    d.reload()
    first.ask()
    assert hi(passed) == b"Hi!"
    assert is_refused(configured)
    assert is_refused(other)
    assert listening_inode(d.pid, passed) == inode
    assert "listening on" not in d.log().replace("socket-activated listener", "")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_repeated_reloads_while_serving(epolld):
    """Ten reloads alternating two ports while one connection talks on."""
    a, b = free_ports(2)
    d, _ = start(epolld, [a])
    with Client(a) as c:
        for i in range(10):
            port = b if i % 2 == 0 else a
            epolld.config(listen=[f"127.0.0.1:{port}"])
            d.reload()
            c.ask()
            assert hi(port) == b"Hi!"
    assert d.count("reloaded configuration") == 10
    assert d.stop() == 0
