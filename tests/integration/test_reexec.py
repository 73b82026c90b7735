"""SIGUSR2: re-exec in place (src/reexec.c, then src/inherit.c and
src/state.c in the new image).

The daemon execs the path it was started from, as the same process, with
every fd passed and a state memfd; the new image adopts the connections by
inode. What must hold: same PID; every connection kept, with its id; every
reply owed is delivered exactly once, whether it sat in the daemon
(unwritten, under backpressure) or was still to be produced from bytes the
client sent during the switch; the listener is the same socket (clients
queued in its backlog meanwhile are served); ids continue; no fd leaks
across images. If execve fails, the running image keeps serving exactly as
before, and a later SIGUSR2 works.

Figures (re-exec latency) are printed with -s.
"""
import os
import select
import shutil
import signal
import socket
import threading
import time

import pytest

from helpers import (ADOPTED, EPOLLIN, EPOLLOUT, REPLY, ask, connect, epoll_interest, fd_cloexec,
                     fill_until_blocked, free_port, free_ports, inq, proc_fds, recv_exact, recv_for,
                     sees_eof, socket_fd_of, start_time, tcp_pair, wait_until)
from launcher import EPOLLD as BIN

LOCAL = ("127.0.0.1",)  # the daemon's own listener, on a free port


def sockets_of(pid):
    """The set of socket inodes PID holds."""
    out = set()
    for fd in proc_fds(pid):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def copy_binary(workdir, name="epolld"):
    path = os.path.join(workdir, name)
    shutil.copy2(BIN, path)
    return path


def exe_ino(pid):
    return os.stat(f"/proc/{pid}/exe").st_ino


# --- the main case -------------------------------------------------------------

N_CONNS, N_STREAMING = 200, 20


def _stream(clients, sent, until):
    """Each client sends single bytes about 1 ms apart and never reads."""
    while time.monotonic() < until:
        for i, c in enumerate(clients):
            c.send(b"x")
            sent[i] += 1
        time.sleep(0.001)


def test_reexec_with_200_connections(epolld):
    """200 connections, 20 of them sending single bytes through the switch
    without reading (their replies pile up unread): same process, same
    ids, same listener, every read answered exactly once (counted from the
    daemon's own "read N bytes" lines), a client queued during the switch
    served with the next id, no fd left behind, twice in a row."""
    d = epolld.start(listen=LOCAL, level="debug")
    clients = [connect(d.port) for _ in range(N_CONNS)]
    d.wait_text("accepted connection #%d " % N_CONNS)
    ids = d.ids_by_port()
    port_of = [c.getsockname()[1] for c in clients]
    assert sorted(ids[p] for p in port_of) == list(range(1, N_CONNS + 1))
    streaming, idle = clients[:N_STREAMING], clients[N_STREAMING:]
    for c in idle[:50]:
        ask(c)
    fds_before, socks_before = proc_fds(d.pid), sockets_of(d.pid)
    started, exe = start_time(d.pid), exe_ino(d.pid)
    assert exe == os.stat(BIN).st_ino

    # Streaming clients keep sending through the switch: bytes read by the
    # old image whose replies are unwritten, bytes in flight, bytes read by
    # the new image. Each must be answered exactly once.
    sent = [0] * N_STREAMING
    t = threading.Thread(target=_stream, args=(streaming, sent, time.monotonic() + 0.8))
    t.start()
    try:
        time.sleep(0.3)  # let the streams run before the switch
        t0 = time.monotonic()
        d.signal(signal.SIGUSR2)
        d.wait_text("notice: SIGUSR2: re-executing %s with %d connection(s)" % (BIN, N_CONNS))
        # The old image logs that line just before execve and reads no more:
        # the next Hi! comes from the new image.
        probe = idle[-1]
        probe.sendall(b"x")
        assert recv_exact(probe, 3) == REPLY
        t_first = time.monotonic() - t0
        late = connect(d.port)  # queued in the listener's backlog during the switch
        ask(late)
        d.wait_text("notice: adopted %d of %d inherited connection(s)" % (N_CONNS, N_CONNS))
        t_adopted = time.monotonic() - t0
    finally:
        t.join(5.0)
    print(f"\nFIGURE re-exec with {N_CONNS} connections: SIGUSR2 -> first Hi! from the new image "
          f"{t_first * 1000:.1f} ms; -> 'adopted' logged (polled) {t_adopted * 1000:.1f} ms")

    assert d.running() and start_time(d.pid) == started  # the same process
    assert d.count(" started: ") == 2
    log = d.log()
    assert "re-exec of" not in log
    adopted = d.ids_by_port(ADOPTED)
    assert {p: adopted[p] for p in port_of} == {p: ids[p] for p in port_of}, "ids changed"
    assert d.ids_by_port()[late.getsockname()[1]] == N_CONNS + 1  # ids continue

    # Every byte sent has been read (by one image or the other) ...
    sids = [ids[p] for p in port_of[:N_STREAMING]]
    wait_until(lambda: all(sum(d.reads().get(cid, [])) == n for cid, n in zip(sids, sent)),
               what="the daemon to read every streamed byte")
    # ... and each read is answered exactly once.
    reads = d.reads()
    for c, cid in zip(streaming, sids):
        got = recv_exact(c, len(reads[cid]) * len(REPLY))
        assert got == REPLY * len(reads[cid]), f"#{cid}: not only whole replies"
    extra = select.select(streaming, [], [], 0.2)[0]
    assert not extra, f"{len(extra)} streaming clients got more than their replies"
    # The streams ran across the switch: both images read from them.
    before, _, after = d.log().partition("SIGUSR2: re-executing")
    for part in (before, after):
        assert any(f"connection #{cid}: read " in part for cid in sids)

    for c in clients:
        ask(c)
    assert sockets_of(d.pid) == socks_before | {server_end_ino(late)}
    assert len(proc_fds(d.pid)) == len(fds_before) + 1  # + late; the old image's own fds closed
    with connect(d.port) as n:
        ask(n)
    d.wait_text("closed connection #%d " % (N_CONNS + 2))

    # And once more: no fds pile up from one image to the next.
    fds = len(proc_fds(d.pid))
    d.reexec()
    d.wait_text("adopted %d of %d inherited connection(s)" % (N_CONNS + 1, N_CONNS + 1))
    for c in clients[::10] + [late]:
        ask(c)
    assert len(proc_fds(d.pid)) == fds
    assert start_time(d.pid) == started
    for c in clients + [late]:
        c.close()


def server_end_ino(client):
    """The socket inode of the daemon's end of CLIENT's connection."""
    port = client.getsockname()[1]
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if f[2] == f"0100007F:{port:04X}" and f[3] == "01":  # ESTABLISHED, not a TIME_WAIT one
            return int(f[9])
    raise AssertionError(f"no server end for local port {port}")


# --- replies the daemon itself holds ------------------------------------------

def test_unwritten_replies_and_eof_survive_reexec(epolld):
    """Two connections whose peers' buffers are full, so the daemon's
    replies stay in the daemon. A: fed single bytes until the daemon holds
    the cap of unwritten replies and stops reading it (one byte waits
    unread). B: some unwritten replies, then EOF from the peer. Both are
    inherited at start so that the daemon's sockets have a small send
    buffer; the re-exec must carry all of it, and each reply arrives once."""
    a_cli, a_srv = tcp_pair(server_sndbuf=4096, client_rcvbuf=4096)
    b_cli, b_srv = tcp_pair(server_sndbuf=4096, client_rcvbuf=4096)
    fill_a, fill_b = fill_until_blocked(a_srv), fill_until_blocked(b_srv)
    d = epolld.start(listen=LOCAL, level="debug", fds=[a_srv.fileno(), b_srv.fileno()],
                     names=["conn", "conn"])
    a_fd, b_fd = 3, 4

    def interest(fd):
        return epoll_interest(d.pid)[fd] & (EPOLLIN | EPOLLOUT)

    def feed(cli, srv, fd):
        """One byte, and wait: True once the daemon read it (a read of its
        own, as nothing else is unread), False if it stopped reading."""
        cli.send(b"x")
        wait_until(lambda: inq(srv) == 0 or interest(fd) == EPOLLOUT,
                   what="the daemon to read the byte or stop reading")
        return inq(srv) == 0

    reads_a = 0
    while feed(a_cli, a_srv, a_fd):
        reads_a += 1
        assert reads_a < 2000, "the daemon's writes never blocked"
    assert reads_a >= 64 and interest(a_fd) == EPOLLOUT and inq(a_srv) == 1

    reads_b = extra = 0
    while extra < 10:  # until replies are held, then 10 more
        assert feed(b_cli, b_srv, b_fd)
        reads_b += 1
        extra += interest(b_fd) & EPOLLOUT != 0
        assert reads_b < 2000, "the daemon's writes never blocked"
    b_cli.shutdown(socket.SHUT_WR)
    wait_until(lambda: interest(b_fd) == EPOLLOUT, what="the daemon to see B's EOF")
    a_srv.close(), b_srv.close()

    d.reexec()
    d.wait_text("adopted 2 of 2 inherited connection(s)")
    assert interest(a_fd) == EPOLLOUT, "A's unwritten replies were not carried over"
    assert interest(b_fd) == EPOLLOUT, "B's replies or its EOF were not carried over"

    # 64 carried over, then the reply to the byte that waited unread.
    assert recv_exact(a_cli, fill_a) == b"F" * fill_a
    assert recv_exact(a_cli, 3 * (reads_a + 1)) == REPLY * (reads_a + 1)
    assert recv_for(a_cli, 0.1) == b""
    ask(a_cli)
    assert recv_exact(b_cli, fill_b) == b"F" * fill_b
    assert recv_exact(b_cli, 3 * reads_b) == REPLY * reads_b
    assert sees_eof(b_cli)
    d.wait_text(f"closed connection #2 (closed by peer) after {reads_b} replies")
    log = d.log()
    assert log.count("debug: connection #1: read 1 bytes") == reads_a + 2
    assert "closed connection #1 " not in log


# --- which binary runs ---------------------------------------------------------

def test_reexec_runs_the_binary_now_at_the_start_path(epolld, tmp_path):
    path = copy_binary(tmp_path)
    d = epolld.start(listen=LOCAL, level="debug", exe=path)
    c = connect(d.port)
    ask(c)
    old = exe_ino(d.pid)
    assert old == os.stat(path).st_ino
    shutil.copy2(BIN, path + ".new")
    os.replace(path + ".new", path)  # a new inode, as a package upgrade does
    new = os.stat(path).st_ino
    assert new != old
    d.reexec()
    assert exe_ino(d.pid) == new
    assert f"re-executing {path} with 1 connection(s)" in d.log()
    ask(c)
    d.wait_text("adopted 1 of 1")


@pytest.mark.parametrize("how", ["relative", "PATH"])
def test_reexec_finds_the_binary_as_it_was_started(epolld, tmp_path, how):
    path = copy_binary(tmp_path, "epolld-rx")
    if how == "relative":  # from cwd = tmp_path
        d = epolld.start(listen=LOCAL, level="debug", exe="./epolld-rx")
        shown = f"{tmp_path}/./epolld-rx"
    else:
        d = epolld.start(listen=LOCAL, level="debug", exe="epolld-rx",
                         env={"PATH": f"{tmp_path}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
        shown = "epolld-rx"
    c = connect(d.port)
    ask(c)
    d.reexec()
    assert f"re-executing {shown} with 1 connection(s)" in d.log()
    assert exe_ino(d.pid) == os.stat(path).st_ino
    ask(c)


# --- execve fails: keep serving ------------------------------------------------

FAILURES = {
    "not executable": "Permission denied",
    "missing": "No such file or directory",
    "not a program": "Exec format error",
}


@pytest.mark.parametrize("how", list(FAILURES))
def test_failed_reexec_keeps_serving(epolld, tmp_path, how):
    path = copy_binary(tmp_path)
    d = epolld.start(listen=LOCAL, level="debug", exe=path)
    clients = [connect(d.port) for _ in range(5)]
    for c in clients:
        ask(c)
    n_fds = len(proc_fds(d.pid))
    clients[2].close()  # a gap in the fd numbers: filled for execve, must be undone
    wait_until(lambda: len(proc_fds(d.pid)) == n_fds - 1, what="the daemon to close it")
    fds = {fd: os.readlink(f"/proc/{d.pid}/fd/{fd}") for fd in proc_fds(d.pid)}
    if how == "not executable":
        os.chmod(path, 0o644)  # no x bit at all: root cannot exec it either
    elif how == "missing":
        os.rename(path, path + ".away")
    else:
        with open(path + ".new", "wb") as f:
            f.write(b"\x7fELF this is not a program\n")
        os.chmod(path + ".new", 0o755)
        os.replace(path + ".new", path)

    d.signal(signal.SIGUSR2)
    d.wait_text(f"err: re-exec of {path} failed: {FAILURES[how]}; still serving with the "
               "running binary")
    assert d.running() and d.count(" started: ") == 1
    for c in clients[:2] + clients[3:]:
        ask(c)
    with connect(d.port) as n:
        ask(n)
    d.wait_text("closed connection #6 ")
    # Exactly the fds it had, all close-on-exec again, no filler left over.
    after = {fd: os.readlink(f"/proc/{d.pid}/fd/{fd}") for fd in proc_fds(d.pid)}
    assert after == fds
    assert all(fd_cloexec(d.pid, fd) for fd in after if fd > 2)

    if how == "not executable":
        os.chmod(path, 0o755)
    else:
        shutil.copy2(BIN, path + ".new")
        os.replace(path + ".new", path)
    d.reexec()
    d.wait_text("adopted 4 of 4 inherited connection(s)")
    for c in clients[:2] + clients[3:]:
        ask(c)
    assert d.count("re-exec of") == 1


# --- more than one signal, socket activation, many listeners ----------------------

def test_sigusr2_during_the_switch_is_not_lost(epolld):
    """A second SIGUSR2 sent while the first re-exec is under way (after
    the old image announced it) stays pending across execve -- blocked,
    never the default action that would kill the process -- and the new
    image re-execs once more."""
    d = epolld.start(listen=LOCAL, level="debug")
    clients = [connect(d.port) for _ in range(10)]
    for c in clients:
        ask(c)
    fds = len(proc_fds(d.pid))
    d.signal(signal.SIGUSR2)
    d.wait_text("SIGUSR2: re-executing")
    d.signal(signal.SIGUSR2)
    d.wait_ready(3)
    d.wait_text("adopted 10 of 10", count=2)
    for c in clients:
        ask(c)
    assert len(proc_fds(d.pid)) == fds
    assert d.count("re-executing") == 2


def test_reexec_keeps_a_socket_activated_listener(epolld):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    lino = os.fstat(s.fileno()).st_ino
    d = epolld.start(listen=LOCAL, level="debug", fds=[s.fileno()], names=["epolld.socket"])
    s.close()
    c = connect(port)
    ask(c)
    d.reexec()
    log = d.wait_text("adopted 1 of 1")
    assert log.count(f"using socket-activated listener 127.0.0.1:{port} (fd 3)") == 2
    assert "listening on" not in log and "dropping stored listener" not in log
    assert socket_fd_of(d.pid, lino) == 3
    ask(c)
    with connect(port) as n:
        ask(n)


@pytest.mark.parametrize("case", ["8 listeners", "2 socket units"])
def test_reexec_with_few_connections_and_long_fd_names(epolld, case):
    """LISTEN_FDNAMES must fit whatever names the fds have: a stored
    listener is named "listen_127.0.0.1_PORT" (22 bytes), a .socket unit's
    FileDescriptorName= can be longer. Regression: prepare() used to size
    the buffer as 8 bytes per fd + 64, so with few connections and 6
    listeners or more, or two long socket unit names, every SIGUSR2 failed
    with "Argument list too long"."""
    if case == "8 listeners":
        ports = free_ports(8)
        conf = epolld.workdir / "many.ini"
        conf.write_text("[server]\n" + "".join(f"listen = 127.0.0.1:{p}\n" for p in ports) +
                        "[log]\nlevel = debug\n")
        d = epolld.start(str(conf))
    else:
        socks = []
        for _ in range(2):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        names = [f"epolld-public-{i}" + "a" * 38 + ".socket" for i in range(2)]  # 60 bytes
        d = epolld.start(listen=LOCAL, level="debug", fds=[s.fileno() for s in socks],
                         names=names)
        for s in socks:
            s.close()
    c = connect(ports[0])
    ask(c)
    d.signal(signal.SIGUSR2)
    wait_until(lambda: d.count(" started: ") == 2 or "re-exec of" in d.log(),
               what="the re-exec to end")
    assert "re-exec of" not in d.log(), d.tail(1)
    d.wait_text("adopted 1 of 1")
    for p in ports:
        with connect(p) as n:
            ask(n)
    ask(c)


# --- what the service manager sees; what must not cost the connections ---------------

def _notify_socket(workdir):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(workdir, "notify")
    s.bind(path)
    s.settimeout(5.0)
    return s, path


def _next_notify(s, key):
    """The next message that has KEY=, as a dict (others are skipped)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        fields = dict(l.split("=", 1) for l in s.recv(4096).decode().split("\n") if "=" in l)
        if key in fields:
            return fields
    raise AssertionError(f"no {key}= message")


def test_reexec_tells_the_service_manager(epolld, tmp_path):
    """RELOADING=1 (with MONOTONIC_USEC) from the old image, READY=1 from
    the new one with the counters carried over; after a failed execve,
    READY=1 with the reason."""
    ns, path = _notify_socket(tmp_path)
    exe = copy_binary(tmp_path)
    d = epolld.start(listen=LOCAL, level="debug", exe=exe, env={"NOTIFY_SOCKET": path})
    assert _next_notify(ns, "READY")["STATUS"] == "0 connections, 0 replies"
    clients = [connect(d.port) for _ in range(3)]
    for c in clients:
        ask(c), ask(c)
    d.reexec()
    m = _next_notify(ns, "RELOADING")
    assert m["RELOADING"] == "1" and int(m["MONOTONIC_USEC"]) > 0
    assert _next_notify(ns, "READY")["STATUS"] == "3 connections, 6 replies"
    os.chmod(exe, 0o644)
    d.signal(signal.SIGUSR2)
    _next_notify(ns, "RELOADING")
    assert _next_notify(ns, "READY")["STATUS"] == "re-exec failed: Permission denied"
    for c in clients:
        ask(c)
    ns.close()


def _ini(ports, extra=""):
    return ("[server]\n" + "".join(f"listen = 127.0.0.1:{p}\n" for p in ports) + extra +
            "[log]\nlevel = debug\n")


@pytest.mark.parametrize("change", ["invalid", "unbindable", "user"])
def test_reexec_refused_when_the_file_cannot_be_applied(epolld, change):
    """SIGUSR2 applies the configuration file first, as SIGHUP does: the new
    image reads it again and could not start on a file that does not load,
    names an address in use, or changes user (it could not switch any
    more), which would cost every connection. Then nothing is executed and
    the running image keeps serving; once the file is fixed, SIGUSR2 works."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    d = epolld.start(listen=LOCAL, level="debug")
    good = open(d.config).read()
    clients = [connect(d.port) for _ in range(3)]
    for c in clients:
        ask(c)
    bad, why = {
        "invalid": (good + "bogus = 1\n", "unknown key 'bogus' in section [log]"),
        "unbindable": (_ini([d.port, busy.getsockname()[1]]),
                       "cannot open a new listener: Address already in use"),
        "user": (_ini([d.port], "user = nobody\n"), "a change of user takes a restart"),
    }[change]
    with open(d.config, "w") as f:
        f.write(bad)
    fds = proc_fds(d.pid)
    d.signal(signal.SIGUSR2)
    log = d.wait_text("err: re-exec failed, keeping the previous configuration")
    assert why in log
    assert "re-executing" not in log and d.count(" started: ") == 1 and d.running()
    for c in clients:
        ask(c)
    with connect(d.port) as n:
        ask(n)
    d.wait_text("closed connection #4 ")
    assert proc_fds(d.pid) == fds

    with open(d.config, "w") as f:
        f.write(good)
    d.reexec()
    d.wait_text("adopted 3 of 3")
    for c in clients:
        ask(c)
    busy.close()


def test_reexec_applies_a_changed_file_first(epolld):
    """A new listen address in the file is bound by the old image (so a
    failure to bind is still recoverable) and handed over like the rest."""
    d = epolld.start(listen=LOCAL, level="debug")
    c = connect(d.port)
    ask(c)
    added = free_port()
    with open(d.config, "w") as f:
        f.write(_ini([d.port, added]))
    d.reexec()
    log = d.wait_text("adopted 1 of 1")
    bound, reexec_at = log.find(f"info: listening on 127.0.0.1:{added}"), log.find("re-executing")
    assert 0 <= bound < reexec_at, "the new listener was not bound before the exec"
    assert log.count(f"listening on 127.0.0.1:{added}") == 1  # the new image kept it
    assert "started: 2 listener(s)" in log[reexec_at:]
    ask(c)
    for p in (d.port, added):
        with connect(p) as n:
            ask(n)
