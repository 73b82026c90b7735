"""[server] user: dropping root after binding (src/privileges.c).

Started as root with user = nobody, the daemon binds (a port below 1024
too), then switches to nobody's uid, gid and supplementary groups and keeps
no capability; it goes on serving, reloads (SIGHUP) and re-execs (SIGUSR2)
as nobody. Root without user warns, unless INVOCATION_ID says systemd runs
it. Not root, it cannot become anyone else (exit 71), but may already be
the configured user.

These tests need root (CI runs them as root) and the nobody user. What the
daemon needs once it is nobody - its binary, which SIGUSR2 executes again,
and its configuration, which SIGHUP reads again - lives in a world-readable
directory of our own: the build tree may be where nobody cannot go (a
clone under /root, mode 0700 on Debian) and pytest's tmp_path is 0700 root.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import EX_CONFIG, EX_OSERR, REPLY, exchange, free_port, listening_ports
from launcher import EPOLLD, ini_text, run_epolld

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NOBODY = pwd.getpwnam("nobody")
WARNING = ("warning: running as root; set [server] user = NAME to drop privileges "
           "after binding")
DROPPED = (f"notice: dropped privileges to user nobody (uid {NOBODY.pw_uid}, "
           f"gid {NOBODY.pw_gid})")


def nobody_groups():
    out = subprocess.run(["id", "-G", "nobody"], capture_output=True, text=True, check=True,
                         timeout=5)
    return sorted(int(g) for g in out.stdout.split())


def status_fields(pid):
    """/proc/PID/status as {field: [values]}."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


def assert_is_nobody(pid):
    st = status_fields(pid)
    assert st["Uid"] == [str(NOBODY.pw_uid)] * 4, st["Uid"]  # real, effective, saved, fs
    assert st["Gid"] == [str(NOBODY.pw_gid)] * 4, st["Gid"]
    assert sorted(int(g) for g in st["Groups"]) == nobody_groups(), st["Groups"]
    assert int(st["CapEff"][0], 16) == 0, st["CapEff"]
    assert int(st["CapPrm"][0], 16) == 0, st["CapPrm"]


def free_low_port():
    """A port below 1024 that is free on 127.0.0.1 right now, from 1023 down."""
    for port in range(1023, 899, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 900..1023")


@pytest.fixture(scope="module")
def shared_dir():
    """A directory every user can read, with a copy of the binary in it."""
    d = Path(tempfile.mkdtemp(prefix="epolld-priv-"))
    try:
        d.chmod(0o755)
        shutil.copy2(EPOLLD, d / "epolld")
        (d / "epolld").chmod(0o755)
        r = run_epolld("-V", exe=str(d / "epolld"), user="nobody")
        assert r.returncode == 0, (f"the copy {d / 'epolld'} cannot be run by nobody "
                                   f"(status {r.returncode}: {r.stderr.strip()})")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start(epolld, shared_dir):
    """epolld.start() with the configuration, the logs and the binary in a
    directory of this test's inside SHARED_DIR, every bit readable by nobody.

    start(server={...}, port=None, env={...}, user=None, ready=True):
    PORT None picks a free one (a lost race is retried); READY False returns
    at once, for starts that must fail."""
    workdir = Path(tempfile.mkdtemp(prefix="test-", dir=shared_dir))
    workdir.chmod(0o755)
    epolld.workdir, epolld.exe = workdir, str(shared_dir / "epolld")

    def start_one(server=None, port=None, env=None, user=None, ready=True, level="info"):
        return epolld.start(listen=("127.0.0.1",), ports=(port,) if port else None,
                            server=server, level=level, env=env, user=user, wait=ready)
    return start_one


def serves(d, port=None):
    with socket.create_connection(("127.0.0.1", port or d.port), timeout=5) as s:
        return exchange(s) == REPLY


# --- root with user = nobody ----------------------------------------------------

def test_root_drops_to_nobody_and_reloads(start):
    d = start(server={"user": "nobody"})
    log = d.log()
    assert DROPPED in log
    assert log.index(DROPPED) < log.index(" started: ")
    assert WARNING not in log
    assert_is_nobody(d.pid)
    assert serves(d)

    # A reload as nobody: the file is readable, the kept listener needs no
    # bind, a new one above 1024 can be bound by nobody.
    second = free_port()
    d.config.write_text(ini_text([f"127.0.0.1:{d.port}", f"127.0.0.1:{second}"],
                                 {"user": "nobody", "idle_timeout": 30}))
    d.signal(signal.SIGHUP)
    d.wait_log(f"notice: reloaded configuration from {re.escape(str(d.config))}")
    assert serves(d) and serves(d, second)
    assert "change of user" not in d.log()
    assert_is_nobody(d.pid)
    assert d.stop() == 0, d.tail()


def test_reload_of_a_file_nobody_cannot_read_keeps_serving(start):
    d = start(server={"user": "nobody"})
    d.config.chmod(0o600)  # root read it at start; nobody cannot now
    d.signal(signal.SIGHUP)
    d.wait_log("err: reload failed, keeping the previous configuration")
    assert re.search(r"^err: .*Permission denied", d.log(), re.M), d.tail()
    assert serves(d)
    assert_is_nobody(d.pid)


def test_privileged_port_bound_before_the_drop(start):
    low = free_low_port()
    d = start(server={"user": "nobody"}, port=low)
    assert DROPPED in d.log()
    assert_is_nobody(d.pid)
    assert low in listening_ports()
    assert serves(d)

    # Reloading keeps the low port (no new bind); a new low port is out of
    # reach for nobody, and the failed reload changes nothing.
    d.signal(signal.SIGHUP)
    d.wait_log("notice: reloaded configuration")
    assert serves(d)
    other = free_low_port()  # ours is taken now: another one
    d.config.write_text(ini_text([f"127.0.0.1:{low}", f"127.0.0.1:{other}"],
                                 {"user": "nobody"}))
    d.signal(signal.SIGHUP)
    d.wait_log("err: reload failed, keeping the previous configuration")
    assert "cannot open a new listener: Permission denied" in d.log()
    assert other not in listening_ports()
    assert serves(d)


def test_reexec_after_the_drop_keeps_serving(start):
    """The new image is nobody already: it must not try to switch again, and
    it keeps the low port it could not bind itself."""
    low = free_low_port()
    d = start(server={"user": "nobody"}, port=low)
    held = socket.create_connection(("127.0.0.1", low), timeout=5)
    try:
        assert exchange(held) == REPLY
        d.signal(signal.SIGUSR2)
        d.wait_log("notice: adopted 1 of 1 inherited connection")
        d.wait_log(" started: ", count=2)
        assert d.proc.poll() is None
        log = d.log()
        assert log.count(DROPPED) == 1, log
        assert "cannot switch" not in log
        assert_is_nobody(d.pid)
        assert exchange(held) == REPLY
        assert serves(d)
    finally:
        held.close()
    d.wait_log("closed connection #1 ")
    assert d.stop() == 0, d.tail()


# --- root without user ----------------------------------------------------------

def test_root_without_user_warns(start):
    d = start()
    assert re.search("^" + re.escape(WARNING) + "$", d.log(), re.M), d.tail()
    assert status_fields(d.pid)["Uid"] == ["0"] * 4
    assert serves(d)


def test_root_without_user_under_systemd_does_not_warn(start):
    d = start(env={"INVOCATION_ID": "0123456789abcdef0123456789abcdef"})
    assert "running as root" not in d.log()
    assert serves(d)


# --- not root -------------------------------------------------------------------

def test_nonroot_cannot_switch_to_root(start):
    d = start(server={"user": "root"}, user="nobody", ready=False)
    assert d.wait_exit(10) == EX_OSERR, d.tail()
    assert "err: cannot switch to user root: not running as root" in d.log()
    assert " started: " not in d.log()


def test_nonroot_already_the_user_runs_without_switching(start):
    d = start(server={"user": "nobody"}, user="nobody")
    log = d.log()
    assert "dropped privileges" not in log and "running as root" not in log, log
    assert_is_nobody(d.pid)
    assert serves(d)
    d.signal(signal.SIGHUP)
    d.wait_log("notice: reloaded configuration")
    assert serves(d)


# --- the key itself (src/config.c) --------------------------------------------

@pytest.mark.parametrize("user, error", [
    ("nosuchuser9", "unknown user 'nosuchuser9'"),
    ("a" * 32, f"unknown user '{'a' * 32}'"),  # longest name allowed
    ("a" * 33, f"invalid user name '{'a' * 33}'"),
    ("-x", "invalid user name '-x'"),
    ("a/b", "invalid user name 'a/b'"),
    ("65534", "unknown user '65534'"),  # a name, not a uid
])
def test_user_must_be_a_valid_existing_name(epolld, tmp_path, user, error):
    config = tmp_path / "epolld.ini"
    config.write_text(ini_text([f"127.0.0.1:{free_port()}"], {"user": user}))
    r = run_epolld("-t", "-c", str(config))
    assert (r.returncode, r.stderr) == (EX_CONFIG, f"{config}:3: user: {error}\n")
    d = epolld.start(config, wait=False)  # a start fails the same way, binding nothing
    assert d.wait_exit() == EX_CONFIG
    assert d.log() == f"err: {config}:3: user: {error}\n"


def test_reload_to_an_unknown_user_keeps_running(start):
    d = start(server={"user": "nobody"})
    d.config.write_text(ini_text([f"127.0.0.1:{d.port}"], {"user": "nosuchuser9"}))
    d.signal(signal.SIGHUP)
    # Not looked up at a reload (it may stall the loop): refused as a change.
    d.wait_log("notice: reloaded configuration from ")
    assert "warning: reload: a change of user takes a restart; keeping the current one" \
        in d.log()
    assert "unknown user" not in d.log()
    assert serves(d)
    assert_is_nobody(d.pid)
