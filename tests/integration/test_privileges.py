"""[server] user: dropping root after binding (src/privileges.c).

Started as root with user = nobody, the daemon binds (a port below 1024
too), then switches to nobody's uid, gid and supplementary groups and keeps
no capability; it goes on serving, reloads (SIGHUP) and re-execs (SIGUSR2)
as nobody. Root without user warns, unless INVOCATION_ID says systemd runs
it. Not root, it cannot become anyone else (exit 71), but may already be
the configured user.

These tests need root (CI runs them as root) and the nobody user. Files the
dropped daemon reads again (its configuration) live in a world-readable
directory of our own, because pytest's tmp_path is 0700 root.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (stop_all, EPOLLD, EX_CONFIG, EX_OSERR, REPLY, Daemon, daemon_env,
                      exchange, free_port, ini_text, listening_ports, run_epolld,
                      wait_until)

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


def as_nobody():
    """Popen arguments that start the child as nobody with nobody's groups, as a login would."""
    return {"user": NOBODY.pw_uid, "group": NOBODY.pw_gid, "extra_groups": nobody_groups()}


@pytest.fixture(scope="module", autouse=True)
def binary_runs_as_nobody():
    r = subprocess.run([EPOLLD, "-V"], capture_output=True, text=True, timeout=10,
                       **as_nobody())
    assert r.returncode == 0, (f"{EPOLLD} cannot be run by nobody (status {r.returncode}: "
                               f"{r.stderr.strip()}); build under a directory nobody can enter")


@pytest.fixture
def workdir():
    """A directory nobody can read (pytest's tmp_path is 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="epolld-priv-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start(workdir, request):
    """A factory like conftest's epolld, with the configuration in WORKDIR.

    start(server={...}, port=None, env={...}, popen={...}, ready=True):
    PORT None picks a free one (a lost race is retried); READY False returns
    as soon as the daemon exits or is up, for starts that must fail."""
    started = []

    def start_one(server=None, port=None, env=None, popen=None, ready=True, level="info"):
        for attempt in range(5):
            p = port or free_port()
            config = workdir / f"epolld-{len(started)}.ini"
            config.write_text(ini_text([f"127.0.0.1:{p}"], server, level))
            config.chmod(0o644)
            log_path = workdir / f"epolld-{len(started)}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([EPOLLD, "-c", str(config)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=log,
                                        env=env if env is not None else daemon_env(),
                                        **(popen or {}))
            d = Daemon(proc, config, log_path, [p], ["127.0.0.1"])
            started.append(d)
            wait_until(lambda: proc.poll() is not None or " started: " in d.log(), 10.0,
                       "the daemon to start or exit")
            if proc.poll() == EX_OSERR and "Address already in use" in d.log() and not port:
                continue
            if ready and proc.poll() is not None:
                raise AssertionError(f"epolld exited with {proc.returncode}; log:\n{d.tail()}")
            return d
        raise AssertionError("no free port found in 5 attempts")

    yield start_one
    stop_all(started, request)


def env_without_invocation_id():
    env = daemon_env()
    env.pop("INVOCATION_ID", None)
    return env


def serves(d, port=None):
    with socket.create_connection(("127.0.0.1", port or d.port), timeout=5) as s:
        return exchange(s) == REPLY


# --- root with user = nobody ----------------------------------------------------

def test_root_drops_to_nobody_and_reloads(start):
    d = start(server={"user": "nobody"}, env=env_without_invocation_id())
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
    d = start(env=env_without_invocation_id())
    assert re.search("^" + re.escape(WARNING) + "$", d.log(), re.M), d.tail()
    assert status_fields(d.pid)["Uid"] == ["0"] * 4
    assert serves(d)


def test_root_without_user_under_systemd_does_not_warn(start):
    env = env_without_invocation_id()
    env["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
    d = start(env=env)
    assert "running as root" not in d.log()
    assert serves(d)


# --- not root -------------------------------------------------------------------

def test_nonroot_cannot_switch_to_root(start):
    d = start(server={"user": "root"}, popen=as_nobody(), ready=False)
    assert d.wait_exit(10) == EX_OSERR, d.tail()
    assert "err: cannot switch to user root: not running as root" in d.log()
    assert " started: " not in d.log()


def test_nonroot_already_the_user_runs_without_switching(start):
    d = start(server={"user": "nobody"}, popen=as_nobody(), env=env_without_invocation_id())
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
def test_user_must_be_a_valid_existing_name(tmp_path, user, error):
    config = tmp_path / "epolld.ini"
    config.write_text(ini_text([f"127.0.0.1:{free_port()}"], {"user": user}))
    r = run_epolld("-t", "-c", str(config))
    assert (r.returncode, r.stderr) == (EX_CONFIG, f"{config}:3: user: {error}\n")
    with open(tmp_path / "log", "wb") as log:  # a start fails the same way, binding nothing
        status = subprocess.run([EPOLLD, "-c", str(config)], stdin=subprocess.DEVNULL,
                                stderr=log, env=daemon_env(), timeout=10).returncode
    assert status == EX_CONFIG
    assert (tmp_path / "log").read_text() == f"err: {config}:3: user: {error}\n"


def test_reload_to_an_unknown_user_keeps_running(start):
    d = start(server={"user": "nobody"})
    d.config.write_text(ini_text([f"127.0.0.1:{d.port}"], {"user": "nosuchuser9"}))
    d.signal(signal.SIGHUP)
    d.wait_log("err: reload failed, keeping the previous configuration")
    assert f"{d.config}:3: user: unknown user 'nosuchuser9'" in d.log()
    assert serves(d)
    assert_is_nobody(d.pid)
