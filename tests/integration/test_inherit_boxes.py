"""Many connection boxes at start (src/inherit.c): boxes ("connbox") and the
state are the daemon's own descriptors, like "conn" and "listen_*", and do
not count against the 64 sockets a .socket unit may pass.

A box holds about 70,000 connections at the default wmem_default and fewer
if that is lowered, so a restart with a few million connections, or with a
small wmem_default, hands over more than 64 boxes. Before the fix a start
with 65 boxes failed with "socket activation: 65 sockets passed" (exit 71)
and closed every descriptor.
"""
import os
import socket

from helpers import ADOPTED, ask, connect, ino, memfd_with, state_bytes, tcp_pair

BOXES = 70
PER_BOX = 2


def box_with(fds):
    """What fdstore.c stores: an AF_UNIX datagram socket connected to
    itself, holding FDS in flight."""
    box = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    box.bind("")  # autobind: a unique abstract address
    box.connect(box.getsockname())
    socket.send_fds(box, [b"c"], fds)
    return os.dup(box.detach())


def test_more_boxes_than_activated_sockets_are_adopted(epolld):
    """70 boxes of 2 connections each, plus the state: every one of the 140
    connections is adopted with its record and answers."""
    clients, boxes, records = [], [], []
    for b in range(BOXES):
        ends = []
        for _ in range(PER_BOX):
            c, s = tcp_pair()
            clients.append(c)
            ends.append(os.dup(s.fileno()))
            records.append((ino(s), len(records) + 1, 0, 0, 0))
            s.close()
        boxes.append(box_with(ends))
        for fd in ends:
            os.close(fd)  # the box holds them now
    n = BOXES * PER_BOX
    state = memfd_with(state_bytes(records, next_id=n))
    layout = [(box, "connbox") for box in boxes] + [(state, "state")]
    d = epolld.start(listen=("127.0.0.1",), level="debug", fds=[fd for fd, _ in layout],
                     names=[nm for _, nm in layout])
    for fd, _ in layout:
        os.close(fd)

    log = d.wait_text(f"notice: adopted {n} of {n} inherited connection(s)")
    assert "socket activation" not in log
    assert sorted(int(cid) for cid, _, _ in ADOPTED.findall(log)) == list(range(1, n + 1))
    for c in clients:
        ask(c)
    with connect(d.port) as fresh:
        ask(fresh)
    d.wait_text(f"accepted connection #{n + 1} ")
    for c in clients:
        c.close()
