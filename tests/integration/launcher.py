"""launcher.py - the one way the tests start epolld.

Launcher.start() runs the daemon with options, however a test needs it:
  - plainly: it binds the listen addresses of its configuration, either a
    file the test wrote (config=) or one written here from listen=, server=
    and level= (each listen host gets a free port; a start that loses a
    port race, exit 71 "Address already in use", is retried with new ones);
  - with descriptors laid out at 3..N (fds=) and LISTEN_FDS, LISTEN_FDNAMES
    (names=) and LISTEN_PID set by hand, as systemd, its fd store or the
    daemon's own previous image passes them: a tiny shim moves the fds into
    place and execs the daemon in place, so that LISTEN_PID (and, with
    watchdog_pid_self, WATCHDOG_PID) can be the daemon's own pid;
  - through systemd-socket-activate (activate=), which listens first and
    execs the daemon on the first connection (trigger());
  - from another binary (exe=, e.g. a copy), as another user (user=), with
    a fake NOTIFY_SOCKET (notify=), under a wrapper such as valgrind or a
    mount namespace of its own (wrapper=, mount_namespace()), with stderr
    in a given file, on a descriptor of the test's (a pipe, socket or
    terminal nobody reads), or stdio closed.
By default it returns once the daemon is ready: READY=1 from its pid when it
has a notify socket, else its "started" log line, or below level info every
port in state LISTEN.

The daemon's stderr goes to a file, never to a pipe, so a chatty daemon can
never block (unless a test passes its own descriptor, to see exactly that). Its environment is the tests' without the variables through
which systemd talks to a service; a test sets those it needs. The `epolld`
fixture (conftest.py) is a Launcher: at teardown it stops every process the
test started, by its pid, prints their logs if the test failed, and fails
the test if a log holds a sanitizer report.

Daemon is the handle of one started process: its log, its signals, its
clients.
"""
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import pytest

from helpers import (ACCEPTED, EX_OSERR, READ, TIMEOUT, Client, NotifySocket, connect,
                     free_port, listening_ports, proc_cpu_seconds, proc_status, wait_until)

SOURCE_ROOT = Path(os.environ.get("EPOLLD_SOURCE_ROOT", Path(__file__).resolve().parents[2]))
EPOLLD = os.path.abspath(os.environ.get("EPOLLD_BIN") or SOURCE_ROOT / "build" / "src" / "epolld")
ACTIVATE = shutil.which("systemd-socket-activate")
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")

# Variables through which systemd talks to a service; a test daemon must
# not inherit them from whoever runs the tests.
_SYSTEMD_VARS = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM",
                 "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID")
# systemd-socket-activate passes only TERM, PATH, USER, HOME and -E NAME on.
_SANITIZER_VARS = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "MSAN_OPTIONS")

# Moves the fds given in the spec to 3..N, sets what must name the process's
# own pid, and execs the daemon in place (a bare name is looked up in PATH).
_SHIM = """\
import fcntl, json, os, sys
spec = json.loads(sys.argv[1])
fds = spec["fds"]
moved = [fcntl.fcntl(f, fcntl.F_DUPFD, 3 + len(fds)) for f in fds]
for i, f in enumerate(moved):
    os.dup2(f, 3 + i, inheritable=True)
for f in moved + [f for f in fds if f >= 3 + len(fds)]:
    os.close(f)
if spec["n_fds"] is not None:
    os.environ["LISTEN_FDS"] = str(spec["n_fds"])
    if spec["names"] is not None:
        os.environ["LISTEN_FDNAMES"] = ":".join(spec["names"])
    pid = spec["listen_pid"]
    os.environ["LISTEN_PID"] = str(os.getpid() if pid == "self" else pid)
if spec["watchdog_pid_self"]:
    os.environ["WATCHDOG_PID"] = str(os.getpid())
os.execvp(sys.argv[2], sys.argv[2:])
"""


def daemon_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
    env.update(extra or {})
    return env


def user_popen_args(name):
    """Popen arguments that start the child as NAME with its groups, as a login would."""
    pw = pwd.getpwnam(name)
    return {"user": pw.pw_uid, "group": pw.pw_gid,
            "extra_groups": sorted(os.getgrouplist(name, pw.pw_gid))}


def run_epolld(*args, timeout=TIMEOUT, exe=None, user=None, env=None):
    """Runs epolld to completion (for options that make it exit at once);
    ENV: variables to add to daemon_env()."""
    return subprocess.run([exe or EPOLLD, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=daemon_env(env), timeout=timeout,
                          **(user_popen_args(user) if user else {}))


CAP_SYS_ADMIN = 21
# What the probe does inside the new namespace: what the tests' scripts do.
_MOUNT_PROBE = 'mount -t tmpfs tmpfs "$1"'


def _has_capability(bit):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


@lru_cache(maxsize=None)
def _unshare_flags():
    """(flags of the first unshare that can mount in its namespace, None)
    or (None, why not). As root, plain -m first: it needs no user
    namespaces, which many containers lack; then -Urm, which needs no
    capability where unprivileged user namespaces are allowed."""
    if not shutil.which("unshare"):
        return None, "needs unshare(1) (util-linux) to make a mount namespace"
    tried = []
    for flags in ((["-m"], ["-Urm"]) if os.geteuid() == 0 else (["-Urm"],)):
        with tempfile.TemporaryDirectory() as mnt:
            r = subprocess.run(["unshare", *flags, "--propagation", "private", "--", "/bin/sh",
                                "-c", _MOUNT_PROBE, "sh", mnt],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=TIMEOUT)
        if r.returncode == 0:
            return flags, None
        tried.append(f"unshare {flags[0]}: {r.stderr.strip() or f'status {r.returncode}'}")
    if os.geteuid() == 0 and not _has_capability(CAP_SYS_ADMIN):
        why = "needs CAP_SYS_ADMIN to make a mount namespace (unshare -m)"
    elif os.geteuid() == 0:
        why = "cannot make a mount namespace although CAP_SYS_ADMIN is held"
    else:
        why = "needs root with CAP_SYS_ADMIN, or user namespaces, to make a mount namespace"
    return None, f"{why}; tried " + "; ".join(tried)


def mount_namespace(script, *args):
    """A wrapper= that starts the daemon in a mount namespace of its own
    (private propagation: nothing outside changes) after the shell SCRIPT,
    which sees ARGS as $1... and must end in `exec "$@"` (the daemon's
    argv). unshare and sh exec in place: the pid stays the daemon's.
    Skips the test, naming exactly what is missing, where no unshare can
    mount."""
    flags, why = _unshare_flags()
    if flags is None:
        pytest.skip(why)
    return ["unshare", *flags, "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
            *args]


# In its own mount namespace the daemon sees $FAKE_JOURNAL as journald's
# socket: a tmpfs on /run, which every system has (a container without
# systemd may lack /run/systemd), holding a symlink to it.
_JOURNAL_NAMESPACE = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
                      'ln -s "$FAKE_JOURNAL" /run/systemd/journal/socket && exec "$@"')


def journal_options(journal_path, stderr):
    """start() options for a daemon that logs to the fake journald bound at
    JOURNAL_PATH (helpers.FakeJournald): stderr the file STDERR (created),
    which JOURNAL_STREAM names, in a mount namespace of its own. Its log
    lines are in the journal, so readiness wants notify=."""
    stderr = Path(stderr)
    stderr.touch()
    st = os.stat(stderr)
    return {"stderr": stderr, "wrapper": mount_namespace(_JOURNAL_NAMESPACE),
            "env": {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                    "FAKE_JOURNAL": str(journal_path)}}


def ini_text(listen, server=None, level="info"):
    """[server] with listen lines and other keys, then [log] level unless None."""
    lines = ["[server]"] + [f"listen = {a}" for a in listen]
    lines += [f"{k} = {v}" for k, v in (server or {}).items()]
    if level is not None:
        lines += ["", "[log]", f"level = {level}"]
    return "\n".join(lines) + "\n"


def write_config(path, listen=(), server=None, level=None):
    """Writes an INI file readable by every user; returns its path as str."""
    path = Path(path)
    path.write_text(ini_text(listen, server, level))
    path.chmod(0o644)
    return str(path)


def _host_of(spec):
    """The address a client uses for a listen host: '[::1]' -> '::1', '*' -> 127.0.0.1."""
    return "127.0.0.1" if spec == "*" else spec.strip("[]")


def _split_address(addr):
    """'127.0.0.1:80' or '[::1]:80' -> (client host, port)."""
    host, port = addr.rsplit(":", 1)
    return _host_of(host), int(port)


def _config_addresses(path):
    """(host, port) of each listen line of the INI file PATH, if it can be read."""
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return []
    return [_split_address(a) for a in re.findall(r"^listen\s*=\s*(\S+:\d+)\s*$", text, re.M)]


def _listening_address(fd):
    """(host, port) of FD if it is a listening TCP socket, else None."""
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    with s:
        try:
            if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET, socket.AF_INET6) \
                    or not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return None
            return s.getsockname()[:2]
        except OSError:
            return None


class Daemon:
    """One started process (the daemon, or systemd-socket-activate or a shim
    that exec it in place: same pid) with its log (stderr) in a file
    (log_path None, log() empty, where stderr was a descriptor of the test's)."""

    def __init__(self, proc, log_path, config=None, addresses=()):
        self.proc = proc
        self.pid = proc.pid
        self.log_path = Path(log_path) if log_path is not None else None
        self.config = Path(config) if config else None
        self.hosts = [h for h, _ in addresses]
        self.ports = [p for _, p in addresses]

    @property
    def port(self):
        return self.ports[0]

    # --- the log ---

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def lines(self):
        return self.log().splitlines()

    def tail(self, lines=40):
        return "\n".join(self.lines()[-lines:])

    def count(self, needle):
        """How often the text NEEDLE occurs in the log."""
        return self.log().count(needle)

    def count_log(self, pattern):
        """How many lines match the regex PATTERN (multi-line)."""
        return len(re.findall(pattern, self.log(), re.M))

    def _wait(self, found, what, timeout):
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            value = found()
            if value:
                return value
            if exited or time.monotonic() >= deadline:
                state = f"exited with {self.proc.returncode}" if exited else "still running"
                raise AssertionError(f"{what} not logged within {timeout} s (pid {self.pid} "
                                     f"{state}); log:\n{self.tail()}")
            time.sleep(0.005)

    def wait_log(self, pattern, timeout=TIMEOUT, count=1):
        """The COUNT-th match of the regex PATTERN (multi-line) in the log;
        fails early if the process exits first."""
        rx = re.compile(pattern, re.M)

        def found():
            matches = list(rx.finditer(self.log()))
            return matches[count - 1] if len(matches) >= count else None
        return self._wait(found, f"{pattern!r} x{count}", timeout)

    def wait_text(self, needle, count=1, timeout=TIMEOUT):
        """Waits for the COUNT-th occurrence of the text NEEDLE; fails early
        if the process exits first. Returns the log."""
        def found():
            log = self.log()
            return log if log.count(needle) >= count else None
        return self._wait(found, f"{needle!r} x{count}", timeout)

    def wait_ready(self, count=1, timeout=TIMEOUT):
        return self.wait_text(" started: ", count, timeout)

    def ids_by_port(self, rx=ACCEPTED):
        """{client port: connection id} from the accepted (or adopted) lines."""
        return {int(m.group(2)): int(m.group(1)) for m in rx.finditer(self.log())}

    def reads(self):
        """{connection id: [bytes of each read]} from the debug lines."""
        out = {}
        for cid, n in READ.findall(self.log()):
            out.setdefault(int(cid), []).append(int(n))
        return out

    # --- the process ---

    def connect(self, index=0, **kw):
        return connect(self.ports[index], self.hosts[index], **kw)

    def rss_kib(self):
        return proc_status(self.pid, "VmRSS")

    def cpu_seconds(self):
        return proc_cpu_seconds(self.pid)

    def running(self):
        return self.proc.poll() is None

    def signal(self, signo):
        os.kill(self.pid, signo)

    def wait_exit(self, timeout=TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {self.pid} still running after {timeout} s; "
                                 f"log:\n{self.tail()}") from None

    def stop(self, timeout=TIMEOUT):
        """SIGTERM, then SIGKILL if it does not go; returns the exit status."""
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(TIMEOUT)

    def reload(self, notify=None, timeout=TIMEOUT, markers=("reloaded configuration",
                                                             "reload failed",
                                                             "nothing to read")):
        """SIGHUP and wait until the reload is over: READY=1 on NOTIFY,
        else one more of the log lines that end a reload."""
        def done():
            log = self.log()
            return sum(log.count(m) for m in markers)
        before = done()
        self.signal(signal.SIGHUP)
        if notify is not None:
            return notify.next_with("READY", "1", timeout)
        wait_until(lambda: done() > before, timeout, f"the end of a reload; log:\n{self.log()}")
        return None

    def reexec(self, timeout=TIMEOUT):
        """SIGUSR2 and wait for the new image to be up (one more 'started')."""
        before = self.count(" started: ")
        self.signal(signal.SIGUSR2)
        return self.wait_ready(before + 1, timeout)


class Launcher:
    """Starts daemons for one test (in WORKDIR) and cleans up after it.

    Calling it is the short form for a daemon on its own configuration:
    launcher(listen=("127.0.0.1",), level="info", **server_keys)."""

    def __init__(self, workdir, request=None):
        self.workdir = Path(workdir)
        self.exe = EPOLLD       # the default binary; a test may point it at a copy
        self.request = request
        self.daemons = []
        self.notifies = []
        self.sockets = []
        self._n = 0

    def __call__(self, listen=("127.0.0.1",), level="info", ready_timeout=TIMEOUT, **server):
        return self.start(listen=listen, level=level, server=server, ready_timeout=ready_timeout)

    def config(self, name="epolld.ini", listen=(), level=None, **server):
        """Writes WORKDIR/NAME (again: the running daemon's file for a reload)."""
        return write_config(self.workdir / name, listen, server, level)

    def notify(self):
        n = NotifySocket()
        self.notifies.append(n)
        return n

    def start(self, config=None, *, listen=None, ports=None, level="info", server=None,
              exe=None, fds=(), names=None, n_fds=None, listen_pid="self", activate=None,
              datagram=False, notify=None, env=None, watchdog_pid_self=False, user=None,
              stderr=None, close_stdio=False, wrapper=(), wait=True, ready_timeout=TIMEOUT):
        """Starts the daemon and returns its Daemon.

        config: an INI file to pass with -c (Daemon.ports: its listen lines);
          without it, one is written from
          LISTEN (hosts, each on a free port unless PORTS gives them),
          SERVER keys and LEVEL; without LISTEN either, no -c at all.
        fds, names, n_fds, listen_pid: descriptors laid out at 3..N,
          LISTEN_FDNAMES (None: unset), LISTEN_FDS (default len(fds)) and
          LISTEN_PID ("self" or a pid).
        activate: addresses for systemd-socket-activate -l (datagram: as
          --datagram); start() returns once it listens, trigger() execs.
        notify: a NotifySocket (notify()) passed as NOTIFY_SOCKET; readiness
          is then READY=1 from the daemon's pid.
        env: variables to add; watchdog_pid_self: WATCHDOG_PID = own pid.
        exe: the binary (default self.exe); user: run as that user;
        stderr: the log file (appended to), or an fd (int) that becomes
          the daemon's stderr as it is (the test closes its copy; no log
          then: readiness is READY=1 with notify, else every port in
          LISTEN); close_stdio: fds 0-2 closed;
        wrapper: argv prefix (valgrind ..., mount_namespace(...));
        wait: False returns at once."""
        extra = dict(env or {})
        if notify is not None:
            extra["NOTIFY_SOCKET"] = notify.path
        for attempt in range(5):
            self._n += 1
            addresses, conf = [], config
            if conf is None and listen is not None:
                picked = list(ports) if ports else [free_port(_host_of(h)) for h in listen]
                addresses = [(_host_of(h), p) for h, p in zip(listen, picked)]
                conf = write_config(self.workdir / f"epolld-{self._n}.ini",
                                    [f"{h}:{p}" for h, p in zip(listen, picked)], server, level)
            elif activate:
                addresses = [_split_address(a) for a in activate]
            else:  # the listen lines of the file, else the listening fds passed
                addresses = _config_addresses(conf) or \
                    [a for a in map(_listening_address, fds) if a]
            argv = list(wrapper) + [exe or self.exe] + (["-c", str(conf)] if conf else [])
            if activate:
                argv = self._activate_argv(activate, datagram, extra) + argv
            elif fds or n_fds is not None or watchdog_pid_self:
                spec = {"fds": list(fds), "names": None if names is None else list(names),
                        "n_fds": len(fds) if n_fds is None and fds else n_fds,
                        "listen_pid": listen_pid, "watchdog_pid_self": watchdog_pid_self}
                argv = [sys.executable, "-c", _SHIM, json.dumps(spec)] + argv
            d = self._spawn(argv, daemon_env(extra), conf, addresses, fds, user, stderr,
                            close_stdio)
            if not wait:
                return d
            if activate:
                d.wait_text("Listening on ", count=len(activate))
                return d
            if self._wait_ready(d, notify, level if config is None else "info", ready_timeout):
                return d
            lost_race = (config is None and not ports and d.proc.returncode == EX_OSERR
                         and "Address already in use" in d.log())
            if not lost_race:
                raise AssertionError(f"epolld did not start (status {d.proc.returncode}); "
                                     f"log:\n{d.tail()}")
        raise AssertionError("no free port found in 5 attempts")

    def _activate_argv(self, listen, datagram, extra):
        if not ACTIVATE:
            pytest.skip("systemd-socket-activate is not installed")
        argv = [ACTIVATE] + (["--datagram"] if datagram else [])
        for a in listen:
            argv += ["-l", a]
        passed = dict(extra)
        for k in _SANITIZER_VARS:
            if k in os.environ:
                passed.setdefault(k, os.environ[k])
        for k, v in passed.items():
            argv += ["-E", f"{k}={v}"]
        return argv

    def _spawn(self, argv, env, conf, addresses, fds, user, stderr, close_stdio):
        kw = {"env": env, "cwd": self.workdir, "pass_fds": tuple(fds)}
        if user:
            kw.update(user_popen_args(user))
        log_path = None if isinstance(stderr, int) else \
            Path(stderr) if stderr else self.workdir / f"epolld-{self._n}.log"
        if log_path is None:
            with open(self.workdir / f"epolld-{self._n}.stdout", "wb") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=stderr, **kw)
        elif close_stdio:
            log_path.touch()
            proc = subprocess.Popen(argv, preexec_fn=_close_stdio, **kw)
        else:
            with open(log_path, "ab") as err, \
                    open(self.workdir / f"epolld-{self._n}.stdout", "wb") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        **kw)
        d = Daemon(proc, log_path, conf, addresses)
        self.daemons.append(d)
        return d

    @staticmethod
    def _wait_ready(d, notify, level, timeout):
        """True once D is ready; False if it exited first."""
        if notify is not None:
            m = notify.next_with("READY", "1", timeout)
            assert m.pid == d.pid, f"READY=1 came from pid {m.pid}, daemon is {d.pid}"
            return True
        deadline = time.monotonic() + timeout
        while d.proc.poll() is None and time.monotonic() < deadline:
            # Below level info there is no "started" line: then ready
            # means every port is in state LISTEN.
            if " started: " in d.log() if level in ("info", "debug") and d.log_path \
                    else set(d.ports) <= listening_ports():
                return True
            time.sleep(0.005)
        if d.proc.poll() is None:
            raise AssertionError(f"epolld not ready within {timeout} s; log:\n{d.tail()}")
        return False

    def trigger(self, d, port, host="127.0.0.1", notify=None):
        """Connects to make systemd-socket-activate exec the daemon; returns
        that first client, connected (the daemon accepts it once it runs)."""
        c = Client(port, host)
        self.sockets.append(c)
        d.wait_text("Execing ")
        if notify is not None:
            m = notify.next_with("READY", "1")
            assert m.pid == d.pid, f"READY=1 came from pid {m.pid}, daemon is {d.pid}"
        else:
            d.wait_ready()
        return c

    def cleanup(self):
        """Stops every process, by pid; with a failed test prints their logs;
        fails the test if any log holds a sanitizer report."""
        failed = getattr(self.request.node, "report_call", None) if self.request else None
        failed = failed is not None and failed.failed
        for c in self.sockets:
            c.close()
        reports = []
        for d in self.daemons:
            status = d.proc.poll()
            d.stop()
            if failed:  # shown with the failure, under "Captured stdout teardown"
                state = "running" if status is None else f"had exited with status {status}"
                print(f"--- pid {d.pid} ({state} at teardown), {d.log_path}:\n{d.tail(60)}")
            if d.log_path and d.log_path.exists() and SANITIZER_REPORT.search(d.log()):
                reports.append(d.tail(80))
        for n in self.notifies:
            n.close()
        if reports:
            pytest.fail("sanitizer report in the daemon's log:\n" + "\n".join(reports))


def _close_stdio():
    for fd in (0, 1, 2):
        os.close(fd)
