"""SIGUSR2 and SIGHUP on the built-in defaults (src/main.c, src/reexec.c):
which configuration file the daemon runs on is decided once, at start (-c
FILE, else the default file if it exists, else none), and an upgrade keeps
that decision: the new image runs on exactly what the old one checked.

Before the fix the old image, on the built-in defaults, logged "nothing to
read" and exec'ed, and the new image looked for the default file again: a
file written there since (a bad one: exit 78) took the listener and every
connection with it; a good one was read by SIGUSR2 but not by SIGHUP.

The default path is compiled in (${sysconfdir}/epolld/epolld.ini), so the
daemon runs in a mount namespace of its own (launcher.mount_namespace():
unshare -m as root, else -Urm) where an empty directory of the test's is
bind-mounted over it; nothing outside changes.
Its listener is passed as by socket activation, so it needs no fixed port.
"""
import re
import signal
import socket
from pathlib import Path

import pytest

from helpers import ask, connect, free_port
from launcher import mount_namespace, run_epolld

HOLD = 20


def default_path():
    r = run_epolld("--help")
    assert r.returncode == 0, r.stderr
    usage = r.stdout
    return Path(re.search(r"default: (\S+) if it exists", usage).group(1))


def mount_point():
    """(the directory to cover, where the file lands inside the cover)."""
    path = default_path()
    if path.parent.is_dir():
        return path.parent, Path(path.name)
    if path.parent.parent.is_dir() and path.parent.parent != Path("/etc"):
        return path.parent.parent, Path(path.parent.name) / path.name
    pytest.skip(f"nowhere to mount over for {path}")


# Runs the daemon's argv ("$@" after the shift) with COVER ($1) bind-mounted
# over the default configuration directory ($2).
COVER = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'


@pytest.fixture
def on_defaults(epolld):
    """A daemon on the built-in defaults (no -c) in its own mount namespace,
    where an empty directory hides the default configuration directory; its
    listener passed as by socket activation. Returns (daemon, path of the
    default file as the test writes it)."""
    target, inside = mount_point()
    cover = epolld.workdir / "sysconf"
    cover.mkdir()
    wrapper = mount_namespace(COVER, str(cover), str(target))
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen()
    d = epolld.start(fds=[listener.fileno()], names=["test.socket"], wait=False, wrapper=wrapper)
    listener.close()
    log = d.wait_ready()
    assert "using built-in defaults" in log, log
    file = cover / inside
    file.parent.mkdir(parents=True, exist_ok=True)
    return d, file


def test_upgrade_on_defaults_ignores_a_bad_file_written_since(on_defaults):
    d, file = on_defaults
    clients = [connect(d.port) for _ in range(HOLD)]
    for c in clients:
        ask(c)
    file.write_text("[server]\nmax_events = lots\n")

    log = d.reexec()
    assert "re-exec requested, but running on built-in defaults: nothing to read" in log
    assert "re-executed on the built-in defaults, as before" in log
    assert "lots" not in log, "the new image read the file the old one never checked"
    assert d.running()
    for c in clients:
        ask(c)
    with connect(d.port) as fresh:
        ask(fresh)
    for c in clients:
        c.close()


def test_reload_and_upgrade_agree_on_a_file_written_since(on_defaults):
    """A valid file written after the start is read by neither SIGHUP nor
    SIGUSR2 (nor a second SIGUSR2): the next start reads it."""
    d, file = on_defaults
    file.write_text("[server]\nmax_events = 7\n")
    d.signal(signal.SIGHUP)
    d.wait_text("reload requested, but running on built-in defaults: nothing to read")
    d.reexec()
    log = d.reexec()
    started = re.findall(r"started: .*", log)
    assert len(started) == 3 and all("max_events=1024" in s for s in started), started
    assert "reloaded configuration" not in log
    with connect(d.port) as c:
        ask(c)


def test_a_stray_reexec_variable_is_ignored():
    """EPOLLD_REEXEC_CONFIG counts only with LISTEN_PID naming the daemon,
    as its previous image sets them: from an operator's shell it changes
    nothing."""
    r = run_epolld("-t", env={"EPOLLD_REEXEC_CONFIG": "/nonexistent/epolld.ini"})
    assert r.returncode == 0 and "nonexistent" not in r.stdout + r.stderr, (r.stdout, r.stderr)
