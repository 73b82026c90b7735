"""Inherited descriptors (src/inherit.c, src/state.c, conn_adopt in
src/conn.c), driven through the one real path: fds laid out at 3..N with
LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, as systemd's fd store or the
daemon's previous image passes them. No test hooks: the "conn" fds are
server ends of real loopback connections made here, and the "state" file is
written here with struct.pack, byte for byte as src/state.c lays it out.

What must hold: a valid state restores each connection's id and unwritten
replies; a state file that is wrong in any one field is ignored as a whole
with one warning, and every connection is still adopted with fresh state; a
"conn" fd that is not a connected TCP socket is closed with a log line and
costs no other connection; a .socket unit's fd that is not a listening TCP
socket stops the start (exit 71); an "x" fd is closed silently.
"""
import os
import socket

import pytest

from helpers import (ADOPTED, EX_OSERR, IGNORED_STATE, REPLY, ask, connect, fd_target, ino,
                     memfd_with, proc_fds, recv_exact, recv_for, sees_eof, socket_fd_of,
                     state_bytes, tcp_pair, wait_until)

LOCAL = ("127.0.0.1",)  # the daemon's own listener, on a free port


def holds(pid, target):
    """True while PID has an fd whose /proc link is TARGET."""
    return any(fd_target(pid, fd) == target for fd in proc_fds(pid))


def start_with(epolld, layout, **kw):
    """layout: [(fd, name)]; our copies are closed once the daemon has them."""
    d = epolld.start(listen=LOCAL, level="debug", fds=[fd for fd, _ in layout],
                     names=[n for _, n in layout], **kw)
    for fd, _ in layout:
        os.close(fd)
    return d


def pairs(n):
    """n connections: clients, and dups of the server ends (ours to pass)."""
    out = []
    for _ in range(n):
        c, s = tcp_pair()
        out.append((c, os.dup(s.fileno()), c.getsockname()[1]))
        s.close()
    return out


def assert_fresh_and_serving(d, conns):
    """Every conn adopted with a fresh id, none sent anything unasked, each
    answers, and a new client is served with the next id."""
    log = d.wait_text(f"notice: adopted {len(conns)} of {len(conns)} inherited connection(s)")
    ids = {int(port): int(cid) for cid, port, _ in ADOPTED.findall(log)}
    assert sorted(ids.values()) == list(range(1, len(conns) + 1)), log
    for c, _, _ in conns:
        assert recv_for(c, 0.1) == b"", "a rejected state's pending replies were sent"
    for c, _, _ in conns:
        ask(c)
    with connect(d.port) as n:
        ask(n)
    d.wait_text(f"accepted connection #{len(conns) + 1} ")


# --- a valid state -----------------------------------------------------------

def test_valid_state_restores_ids_and_pending_replies(epolld):
    """Records restore the id, the unwritten replies (whole and partial) and
    the EOF flag; a conn without a record gets the next id after next_id;
    a record for an inode nobody passed is harmless."""
    names = ["pend6", "idle", "fresh", "partial4", "max192", "eof3", "eof0"]
    conns = dict(zip(names, pairs(len(names))))
    recs = {"pend6": (7, 10, 6, 0), "idle": (3, 1, 0, 0), "partial4": (5, 2, 4, 0),
            "max192": (9, 64, 192, 0), "eof3": (2, 1, 3, 2), "eof0": (4, 0, 0, 2)}
    records = [(ino(conns[k][1]), cid, reps, pend, flags)
               for k, (cid, reps, pend, flags) in recs.items()]
    records.append((ino(conns["idle"][1]) + 1_000_000, 8, 0, 6, 0))  # nobody's inode
    state = memfd_with(state_bytes(records, next_id=10, replies=78))
    layout = [(conns[k][1], "conn") for k in names[:3]] + [(state, "state")] + \
             [(conns[k][1], "conn") for k in names[3:]]
    d = start_with(epolld, layout)

    log = d.wait_text("notice: adopted 7 of 7 inherited connection(s)")
    assert IGNORED_STATE not in log
    ids = {int(port): int(cid) for cid, port, _ in ADOPTED.findall(log)}
    want = {k: recs[k][0] for k in recs} | {"fresh": 11}
    assert {k: ids[conns[k][2]] for k in names} == want, log

    c = {k: conns[k][0] for k in names}
    assert recv_exact(c["pend6"], 6) == REPLY * 2
    assert recv_exact(c["partial4"], 4) == b"!" + REPLY  # the rest of a half-written reply
    assert recv_exact(c["max192"], 192) == REPLY * 64
    assert recv_exact(c["eof3"], 3) == REPLY and sees_eof(c["eof3"])
    assert sees_eof(c["eof0"])
    d.wait_text("closed connection #4 (closed by peer) after 0 replies")
    d.wait_text("closed connection #2 (closed by peer) after 1 replies")
    for k in ("pend6", "idle", "fresh", "partial4", "max192"):
        assert recv_for(c[k], 0.05) == b"", k  # exactly what was pending, no more
        ask(c[k])
    with connect(d.port) as n:
        ask(n)
    d.wait_text("accepted connection #12 ")
    log = d.log()
    assert "debug: connection #7: read 1 bytes" in log
    for cid in (7, 3, 11, 5, 9):
        assert f"closed connection #{cid} " not in log, log


# --- a bad state file: ignored as a whole, connections adopted fresh ------------

def _records(inodes):
    # The first conn has 6 bytes pending: if a rejected file were used after
    # all, that client would receive Hi!Hi! unasked.
    return [(inodes[0], 5, 1, 6, 0), (inodes[1], 6, 0, 0, 0), (inodes[2], 7, 0, 0, 0)]


def _bad(kind, inodes):
    r = _records(inodes)
    good = state_bytes(r, next_id=9)
    return {
        "bad magic": state_bytes(r, 9, magic=b"EPOLLDSX"),
        "wrong version": state_bytes(r, 9, version=4),
        "record size": state_bytes(r, 9, record_size=40),
        "truncated header": good[:20],
        "truncated record": good[:-5],
        "empty": b"",
        "count too high": state_bytes(r, 9, count=4),
        "count too low": state_bytes(r, 9, count=2),
        "pending > 192": state_bytes([(inodes[0], 5, 1, 193, 0)] + r[1:], 9),
        "flag bit 0": state_bytes([(inodes[0], 5, 1, 6, 1)] + r[1:], 9),
        "flag bit 2": state_bytes([(inodes[0], 5, 1, 6, 4)] + r[1:], 9),
        "high flag bit": state_bytes([(inodes[0], 5, 1, 6, 0x80000000)] + r[1:], 9),
        "duplicate inode": state_bytes(r + [(inodes[1], 8, 0, 0, 0)], 9),
        "id 0": state_bytes([(inodes[0], 0, 1, 6, 0)] + r[1:], 9),
        "id past next_id": state_bytes(r, next_id=6),
    }[kind]


WHY = {
    "bad magic": "not an epolld state file (bad magic)",
    "wrong version": "unsupported version 4",
    "record size": "record size 40, expected 32",
    "truncated header": "not a regular file of a plausible size (20 bytes)",
    "truncated record": "count 3 does not match the size 131",
    "empty": "not a regular file of a plausible size (0 bytes)",
    "count too high": "count 4 does not match the size 136",
    "count too low": "count 2 does not match the size 136",
    "pending > 192": "bad pending 193 or flags 0",
    "flag bit 0": "bad pending 6 or flags 0x1",
    "flag bit 2": "bad pending 6 or flags 0x4",
    "high flag bit": "bad pending 6 or flags 0x80000000",
    "duplicate inode": "twice",
    "id 0": "id 0 out of range",
    "id past next_id": "id 7 out of range",
}


@pytest.mark.parametrize("kind", list(WHY))
def test_bad_state_is_ignored_and_connections_adopted_fresh(epolld, kind):
    conns = pairs(3)
    state = memfd_with(_bad(kind, [ino(s) for _, s, _ in conns]))
    d = start_with(epolld, [(conns[0][1], "conn"), (state, "state"), (conns[1][1], "conn"),
                        (conns[2][1], "conn")])
    log = d.wait_text(IGNORED_STATE)
    line = next(l for l in log.splitlines() if IGNORED_STATE in l)
    assert WHY[kind] in line and line.endswith("; connections get fresh state"), line
    assert log.count(IGNORED_STATE) == 1
    assert_fresh_and_serving(d, conns)


@pytest.mark.parametrize("kind", ["duplicate id", "next_id at the top"])
def test_state_never_makes_ids_repeat_or_zero(epolld, kind):
    """Ids name connections in the log and the journal (CONNECTION_ID=):
    whatever a state file says, no two connections may share one and none
    may be 0 (the reader itself rejects a record with id 0). BUG: two
    records with the same id (distinct inodes) are accepted, and so is
    next_id = 2^64-1, after which a connection without a record gets
    ++next_id = #0. Either file should be rejected like any bad field."""
    conns = pairs(3)
    inodes = [ino(s) for _, s, _ in conns]
    if kind == "duplicate id":
        data = state_bytes([(inodes[0], 5, 0, 0, 0), (inodes[1], 5, 0, 0, 0)], 6)
    else:
        data = state_bytes([(inodes[0], 5, 0, 0, 0), (inodes[1], 6, 0, 0, 0)], 2**64 - 1)
    state = memfd_with(data)
    d = start_with(epolld, [(conns[0][1], "conn"), (conns[1][1], "conn"), (conns[2][1], "conn"),
                        (state, "state")])
    log = d.wait_text("adopted 3 of 3")
    ids = [int(cid) for cid, _, _ in ADOPTED.findall(log)]
    assert len(set(ids)) == 3 and 0 not in ids, f"adopted ids {ids}"
    for c, _, _ in conns:
        ask(c)


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_state_that_is_not_a_file_is_ignored(epolld, kind):
    conns = pairs(2)
    if kind == "pipe":
        state, writer = os.pipe()
        os.write(writer, state_bytes([(ino(conns[0][1]), 1, 0, 6, 0)], 1))
    else:
        a, b = socket.socketpair()
        state, writer = os.dup(a.fileno()), os.dup(b.fileno())
        a.close(), b.close()
        os.write(writer, state_bytes([(ino(conns[0][1]), 1, 0, 6, 0)], 1))
    link = f"{kind}:[{ino(state)}]"
    try:
        d = start_with(epolld, [(conns[0][1], "conn"), (state, "state"), (conns[1][1], "conn")])
        log = d.wait_text(IGNORED_STATE)
        assert "not a regular file of a plausible size" in log
        assert_fresh_and_serving(d, conns)
        assert not holds(d.pid, link)
    finally:
        os.close(writer)


def test_second_state_file_is_closed_and_the_first_used(epolld):
    conns = pairs(1)
    first = memfd_with(state_bytes([(ino(conns[0][1]), 4, 0, 3, 0)], 4))
    second = memfd_with(state_bytes([(ino(conns[0][1]), 2, 0, 6, 0)], 4))
    d = start_with(epolld, [(first, "state"), (conns[0][1], "conn"), (second, "state")])
    log = d.wait_text("adopted 1 of 1")
    assert "warning: inherited fd 5 (state) is a second state file; closing it" in log
    assert recv_exact(conns[0][0], 3) == REPLY and recv_for(conns[0][0], 0.05) == b""
    assert ADOPTED.search(log).group(1) == "4"
    assert not any((fd_target(d.pid, fd) or "").startswith("/memfd:test-state")
                   for fd in proc_fds(d.pid))


# --- bad "conn" fds ------------------------------------------------------------

def _not_a_connection(kind):
    """(fd to pass, /proc link of it, a probe that is true once it is closed)."""
    if kind == "pipe":
        r, w = os.pipe()
        def closed():
            try:
                os.write(w, b"x")
                return False
            except BrokenPipeError:
                os.close(w)
                return True
        return r, f"pipe:[{ino(r)}]", closed
    if kind == "listening":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        def closed():
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", port)) != 0
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", 9))
        closed = None
    elif kind == "unix":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        s = a
        b.settimeout(5.0)
        def closed():
            return b.recv(1) == b""
    fd = os.dup(s.fileno())
    s.close()
    return fd, f"socket:[{ino(fd)}]", closed


@pytest.mark.parametrize("kind", ["listening", "udp", "pipe", "unix"])
def test_conn_that_is_not_a_tcp_connection_is_closed(epolld, kind):
    conns = pairs(2)
    bad, link, closed = _not_a_connection(kind)
    d = start_with(epolld, [(conns[0][1], "conn"), (bad, "conn"), (conns[1][1], "conn")])
    log = d.wait_text("notice: adopted 2 of 2 inherited connection(s)")
    assert "warning: inherited fd 4 (conn) is not a connected TCP socket; closing it" in log
    assert not holds(d.pid, link)
    if closed:
        assert wait_until(closed, what="the bad fd to be closed")
    for c, _, _ in conns:
        ask(c)
    with connect(d.port) as n:
        ask(n)


def test_conn_that_is_an_unconnected_tcp_socket_is_closed(epolld):
    """A TCP socket that is neither listening nor connected (bound only, or
    fresh) is no connection either. BUG: is_connected_tcp() only checks
    "not listening", so it is adopted as a connection with an id of its
    own ("adopted 3 of 3", "from ?") and only dropped a loop turn later
    on its failed read ("Transport endpoint is not connected")."""
    conns = pairs(1)
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    fresh = socket.socket()
    b, f = os.dup(bound.fileno()), os.dup(fresh.fileno())
    bound.close(), fresh.close()
    d = start_with(epolld, [(b, "conn"), (conns[0][1], "conn"), (f, "conn")])
    log = d.wait_text("inherited connection(s)")
    ask(conns[0][0])
    log = d.log()
    assert "warning: inherited fd 3 (conn) is not a connected TCP socket; closing it" in log, log
    assert "warning: inherited fd 5 (conn) is not a connected TCP socket; closing it" in log, log
    assert "notice: adopted 1 of 1 inherited connection(s)" in log, log


def test_x_fd_is_closed_silently(epolld):
    conns = pairs(1)
    r, w = os.pipe()
    link = f"pipe:[{ino(r)}]"
    try:
        d = start_with(epolld, [(r, "x"), (conns[0][1], "conn")])
        d.wait_text("adopted 1 of 1")
        assert not holds(d.pid, link)
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")
        ask(conns[0][0])
        log = d.log()
        assert "fd 3" not in log and "(x)" not in log, log
        assert "warning" not in log.replace("warning: running as root", ""), log
    finally:
        os.close(w)


# --- listeners: a .socket unit's and our own stored ones ------------------------------

def _listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    fd = os.dup(s.fileno())
    s.close()
    return fd, port


@pytest.mark.parametrize("kind", ["connected", "udp", "unconnected"])
def test_activated_fd_that_is_not_listening_stops_the_start(epolld, kind):
    conns = pairs(2)
    if kind == "connected":
        c, s = tcp_pair()
        bad = os.dup(s.fileno())
        s.close()
    else:
        kind_ = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        s = socket.socket(socket.AF_INET, kind_)
        s.bind(("127.0.0.1", 0))
        bad = os.dup(s.fileno())
        s.close()
    d = start_with(epolld, [(conns[0][1], "conn"), (bad, "epolld.socket"), (conns[1][1], "conn")],
                   wait=False)
    assert d.wait_exit() == EX_OSERR
    log = d.log()
    assert "err: socket activation: fd 4 is not a listening TCP socket" in log, log
    assert " started: " not in log
    for c, _, _ in conns:
        assert sees_eof(c, 2.0)


def test_activated_listener_with_inherited_connections(epolld):
    """systemctl restart of a socket-activated service: the .socket unit's
    listener and the stored conns and state come together."""
    conns = pairs(2)
    lfd, lport = _listening()
    state = memfd_with(state_bytes([(ino(conns[1][1]), 40, 3, 3, 0)], 41))
    d = start_with(epolld, [(conns[0][1], "conn"), (lfd, "epolld.socket"), (state, "state"),
                        (conns[1][1], "conn")])
    log = d.wait_text("adopted 2 of 2")
    assert "using socket-activated listener 127.0.0.1:%d (fd 4)" % lport in log
    assert recv_exact(conns[1][0], 3) == REPLY
    for c, _, _ in conns:
        ask(c)
    with connect(lport) as n:
        ask(n)
    d.wait_text("accepted connection #43 ")  # 40 restored, 42 fresh for conns[0], then 43
    assert {int(cid) for cid, _, _ in ADOPTED.findall(log)} == {40, 42}


def test_stored_listener_is_kept_and_a_broken_one_closed(epolld):
    """listen_ADDR fds: the one matching the configuration is kept (same
    socket, its backlog intact), one that is not listening is closed with a
    line, one the configuration no longer has is closed."""
    keep, port = _listening()
    keep_ino = ino(keep)
    waiting = connect(port)  # in the stored listener's backlog across the start
    stale, stale_port = _listening()
    c, s = tcp_pair()
    broken = os.dup(s.fileno())
    s.close()
    conf = epolld.config(listen=[f"127.0.0.1:{port}"], level="debug")
    d = start_with(epolld, [(stale, f"listen_127.0.0.1_{stale_port}"),
                        (keep, f"listen_127.0.0.1_{port}"), (broken, "listen_127.0.0.1_1")],
                   config=conf)
    log = d.log()
    assert "warning: inherited fd 5 (listen_127.0.0.1_1) is not a usable listening TCP socket; " \
           "closing it" in log, log
    assert f"listening on 127.0.0.1:{port}" not in log  # kept, not bound again
    assert f"info: no longer listening on 127.0.0.1:{stale_port}" in log
    assert socket_fd_of(d.pid, keep_ino) == 4
    ask(waiting)
    waiting.close()
    with socket.socket() as x:
        assert x.connect_ex(("127.0.0.1", stale_port)) != 0
    assert sees_eof(c, 2.0)


# --- connection boxes ----------------------------------------------------------

def box_with(fds):
    """What fdstore.c stores: an AF_UNIX datagram socket connected to itself,
    holding FDS in flight, at most 253 per message."""
    box = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    box.bind("")  # autobind: a unique abstract address
    box.connect(box.getsockname())
    for i in range(0, len(fds), 253):
        socket.send_fds(box, [b"c"], fds[i:i + 253])
    return os.dup(box.detach())


def test_connbox_carries_connections_with_their_state(epolld):
    """300 connections parked in two boxes (two messages in one, one in the
    other): all adopted, the state matched by inode across boxes, and a
    box that is no socket is closed with a line while the rest survive."""
    conns = pairs(300)
    state = memfd_with(state_bytes([(ino(conns[0][1]), 42, 7, 6, 0)], next_id=42, replies=7))
    boxes = [box_with([s for _, s, _ in conns[:260]]), box_with([s for _, s, _ in conns[260:]])]
    for _, s, _ in conns:
        os.close(s)  # the boxes hold them now
    not_a_box = memfd_with(b"x")
    d = start_with(epolld, [(boxes[0], "connbox"), (state, "state"), (not_a_box, "connbox"),
                        (boxes[1], "connbox")])

    log = d.wait_text("notice: adopted 300 of 300 inherited connection(s)")
    assert "(connbox) is not a connection box; closing it" in log
    assert IGNORED_STATE not in log
    # (client ports may repeat across these pairs' different listeners)
    assert sorted(int(cid) for cid, _, _ in ADOPTED.findall(log)) == list(range(42, 342))
    assert recv_exact(conns[0][0], 6) == REPLY * 2  # its record, found by inode
    for c, _, _ in conns:
        ask(c)
    with connect(d.port) as n:
        ask(n)
    d.wait_text("accepted connection #342 ")
