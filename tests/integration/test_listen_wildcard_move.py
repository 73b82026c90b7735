"""A reload cannot move a port between a wildcard and a specific host
(`*:P` -> `127.0.0.1:P`, or back): it is refused with a line that says a
stop and start is needed, and nothing changes (src/listener.c,
check_moves()).

Why refused rather than done: Linux will not bind 127.0.0.1:P while
0.0.0.0:P listens (EADDRINUSE), nor the other way round. Closing the old
socket first would refuse clients meanwhile and lose "a failed reload
changes nothing" (a bind that then fails, e.g. a port below 1024 after
root was dropped, could not be undone); SO_REUSEPORT on both for the swap
leaves the port open to any process of the same user afterwards, even once
the option is cleared again (measured on Linux 6.18).
"""
import re
import signal
import socket

from helpers import (EX_OK, EX_OSERR, REPLY, ask, connect, free_port, has_ipv6_loopback, hi,
                     is_refused)

FAILED = "err: reload failed, keeping the previous configuration"


def write_ini(epolld, *listen):
    return epolld.config("epolld.ini", listen=listen, level="info")


def served(host, port):
    return hi(port, host) == REPLY


def reload_refused(epolld, d, *listen):
    write_ini(epolld, *listen)
    d.signal(signal.SIGHUP)
    d.wait_text(FAILED)
    return d.log()


def test_narrowing_a_wildcard_is_refused_and_changes_nothing(epolld):
    port = free_port()
    conf = write_ini(epolld, f"*:{port}")
    d = epolld.start(conf)
    before = connect(port)
    ask(before)
    log = reload_refused(epolld, d, f"127.0.0.1:{port}")
    tail = log[log.index("err: cannot change"):].splitlines()[:3]
    assert tail == [
        f"err: cannot change 0.0.0.0:{port} to 127.0.0.1:{port} while running (Linux will not "
        "bind both on one port at once): stop epolld and start it again to apply this",
        "err: cannot open a new listener: Address already in use",
        FAILED,
    ], log
    assert "no longer listening" not in log
    ask(before)
    assert served("127.0.0.1", port)
    assert served("127.0.0.2", port)  # the wildcard still serves
    if has_ipv6_loopback():
        assert served("::1", port)
    before.close()

    # What the message asks for: stop, start again with the new file.
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == EX_OK
    d = epolld.start(conf)
    assert f"info: listening on 127.0.0.1:{port}\n" in d.log()
    assert served("127.0.0.1", port)
    assert is_refused(port, "127.0.0.2")


def test_widening_to_a_wildcard_is_refused_and_changes_nothing(epolld):
    port = free_port()
    d = epolld.start(write_ini(epolld, f"127.0.0.1:{port}"))
    log = reload_refused(epolld, d, f"*:{port}")
    assert re.search(
        rf"^err: cannot change 127\.0\.0\.1:{port} to 0\.0\.0\.0:{port} while running "
        r"\(Linux will not bind both on one port at once\): stop epolld and start it again "
        r"to apply this$", log, re.M), log
    assert served("127.0.0.1", port)
    assert is_refused(port, "127.0.0.2")


def test_other_ports_still_move_freely(epolld):
    """Only a move on one port is refused: `*:P` -> `127.0.0.1:Q` works,
    new socket bound before the old one is closed."""
    port, other = free_port(), free_port()
    d = epolld.start(write_ini(epolld, f"*:{port}"))
    write_ini(epolld, f"127.0.0.1:{other}")
    d.signal(signal.SIGHUP)
    log = d.wait_text("notice: reloaded configuration from ")
    assert f"info: listening on 127.0.0.1:{other}\n" in log
    assert f"info: no longer listening on 0.0.0.0:{port}\n" in log
    assert served("127.0.0.1", other)
    assert is_refused(port)


def test_restart_handing_over_the_wildcard_fails_to_start(epolld):
    """A restart through the fd store goes through the same check: the new
    process is handed the stored 0.0.0.0:P and refuses 127.0.0.1:P with the
    same line, exit 71 (hence `systemctl stop`, then `start`)."""
    stored = socket.socket()
    stored.bind(("0.0.0.0", 0))
    stored.listen(4)
    port = stored.getsockname()[1]
    conf = write_ini(epolld, f"127.0.0.1:{port}")
    d = epolld.start(conf, fds=[stored.fileno()], names=[f"listen_0.0.0.0_{port}"], wait=False)
    stored.close()
    assert d.wait_exit() == EX_OSERR
    assert (f"err: cannot change 0.0.0.0:{port} to 127.0.0.1:{port} while running (Linux will "
            "not bind both on one port at once): stop epolld and start it again to apply this\n"
            in d.log()), d.log()
