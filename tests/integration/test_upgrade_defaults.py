"""SIGUSR2 and SIGHUP on the built-in defaults (src/main.c, src/reexec.c):
which configuration file the daemon runs on is decided once, at start (-c
FILE, else the default file if it exists, else none), and an upgrade keeps
that decision: the new image runs on exactly what the old one checked.

Before the fix the old image, on the built-in defaults, logged "nothing to
read" and exec'ed, and the new image looked for the default file again: a
file written there since (a bad one: exit 78) took the listener and every
connection with it; a good one was read by SIGUSR2 but not by SIGHUP.

The default path is compiled in (${sysconfdir}/epolld/epolld.ini), so the
daemon runs in a mount namespace of its own (unshare -Urm) where an empty
directory of the test's is bind-mounted over it; nothing outside changes.
Its listener is passed as by socket activation, so it needs no fixed port.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rxhelpers
from rxhelpers import BIN, ask, connect, free_port, rx  # noqa: F401

HOLD = 20


def default_path():
    usage = subprocess.run([BIN, "--help"], capture_output=True, text=True, check=True).stdout
    return Path(re.search(r"default: (\S+) if it exists", usage).group(1))


def mount_point():
    """(the directory to cover, where the file lands inside the cover)."""
    path = default_path()
    if path.parent.is_dir():
        return path.parent, Path(path.name)
    if path.parent.parent.is_dir() and path.parent.parent != Path("/etc"):
        return path.parent.parent, Path(path.parent.name) / path.name
    pytest.skip(f"nowhere to mount over for {path}")


def can_unshare():
    return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0


_LAUNCH = (
    "import fcntl, os, sys\n"
    "fd = fcntl.fcntl(int(sys.argv[1]), fcntl.F_DUPFD, 200)\n"
    "os.dup2(fd, 3, inheritable=True)\n"
    "os.close(fd)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_FDNAMES='test.socket', LISTEN_PID=str(os.getpid()))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n")


class DefaultsDaemon(rxhelpers.Daemon):
    """epolld without -c, in its own mount namespace where COVER hides the
    default configuration directory; same pid all the way (unshare, sh and
    the launcher exec in place)."""

    def __init__(self, workdir, cover, target, listener):
        self.workdir = Path(workdir)
        self.exe, self.conf = BIN, None
        self.port = listener.getsockname()[1]
        self.log_path = self.workdir / f"epolld-{time.monotonic_ns()}.log"
        fd = listener.fileno()
        argv = ["unshare", "-Urm", "--", "/bin/sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(cover), str(target),
                sys.executable, "-c", _LAUNCH, str(fd), BIN]
        env = {k: v for k, v in os.environ.items() if k not in rxhelpers._SYSTEMD_VARS}
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, pass_fds=(fd,),
                                         cwd=self.workdir)
        self.pid = self.proc.pid


@pytest.fixture
def on_defaults(rx):
    """A daemon on the built-in defaults with an empty default directory;
    returns (daemon, path of the default file as the test writes it)."""
    if not can_unshare():
        pytest.skip("unshare -Urm is not permitted here")
    target, inside = mount_point()
    cover = rx.workdir / "sysconf"
    cover.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen()
    d = DefaultsDaemon(rx.workdir, cover, target, listener)
    rx.daemons.append(d)
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
    d.wait_log("reload requested, but running on built-in defaults: nothing to read")
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
    env = {k: v for k, v in os.environ.items() if k not in rxhelpers._SYSTEMD_VARS}
    env["EPOLLD_REEXEC_CONFIG"] = "/nonexistent/epolld.ini"
    r = subprocess.run([BIN, "-t"], capture_output=True, text=True, env=env, timeout=10)
    assert r.returncode == 0 and "nonexistent" not in r.stdout + r.stderr, (r.stdout, r.stderr)
