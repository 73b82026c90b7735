"""Shared helpers for the black-box tests of epolld.

Every test starts its own daemon (the `epolld` fixture) on a free loopback
port with a temporary INI file, waits until the daemon logs that it has
started, and stops it at teardown; the teardown also fails the test if the
daemon's log holds a sanitizer report. The daemon's stderr goes to a file,
never to a pipe, so a chatty daemon can never block on a full pipe.

Every wait here is bounded and polls for its condition; nothing sleeps
blindly for longer than one polling interval.
"""
import os
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SOURCE_ROOT = Path(os.environ.get("EPOLLD_SOURCE_ROOT", Path(__file__).resolve().parents[2]))
EPOLLD = os.environ.get("EPOLLD_BIN") or str(SOURCE_ROOT / "build" / "src" / "epolld")

EX_OK, EX_USAGE, EX_OSERR, EX_CONFIG = 0, 64, 71, 78
REPLY = b"Hi!"

# Variables through which systemd talks to a service; a test daemon must
# not inherit them from whoever runs the tests.
_SYSTEMD_VARS = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                 "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")


def daemon_env():
    env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
    return env


def run_epolld(*args, timeout=10.0):
    """Runs epolld to completion (for options that make it exit at once)."""
    return subprocess.run([EPOLLD, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=daemon_env(), timeout=timeout)


def wait_until(predicate, timeout, what, interval=0.01):
    """Polls PREDICATE until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (a start that loses the race retries)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n, host="127.0.0.1"):
    """N distinct ports that were free a moment ago: all are held open
    together while they are picked, so none is handed out twice."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- clients -----------------------------------------------------------------

def connect(host, port, timeout=5.0, rcvbuf=None, sndbuf=None):
    """A blocking client socket with a timeout on every operation."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        s.settimeout(timeout)
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def reset(sock):
    """Closes SOCK with an RST instead of a FIN (SO_LINGER with timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def recv_exact(sock, n, timeout=3.0):
    """Exactly N bytes, or AssertionError saying what did arrive."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {data!r} within {timeout} s, expected {n} bytes")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            continue
        if not chunk:
            raise AssertionError(f"EOF after {data!r}, expected {n} bytes")
        data += chunk
    return data


def recv_for(sock, duration):
    """Whatever arrives within DURATION seconds (b"" if nothing)."""
    deadline = time.monotonic() + duration
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_until_eof(sock, timeout):
    """Everything up to EOF; AssertionError if EOF does not come in time."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise AssertionError(f"no EOF within {timeout} s ({len(data)} bytes so far)")
        chunk = sock.recv(1 << 20)
        if not chunk:
            return data
        data += chunk


def sees_eof(sock, timeout):
    """True if SOCK reaches EOF (or a reset) within TIMEOUT, reading nothing else."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def exchange(sock, msg=b"hello\n", timeout=3.0):
    """Sends one message and returns the 3 bytes that come back."""
    sock.sendall(msg)
    return recv_exact(sock, len(REPLY), timeout)


def assert_only_replies(data):
    assert len(data) % len(REPLY) == 0, f"{len(data)} bytes is not a whole number of replies"
    assert data == REPLY * (len(data) // len(REPLY)), "reply stream is not 'Hi!' repeated"


# --- /proc -------------------------------------------------------------------

def proc_status(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def proc_cpu_seconds(pid):
    """User + system CPU time of PID, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listening_ports():
    """Local ports of the sockets in state LISTEN (this network namespace)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def proc_fds(pid):
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


# --- the daemon --------------------------------------------------------------

class Daemon:
    """One running epolld and its log."""

    def __init__(self, proc, config, log_path, ports, hosts):
        self.proc = proc
        self.pid = proc.pid
        self.config = config
        self.log_path = log_path
        self.ports = ports
        self.hosts = hosts

    @property
    def port(self):
        return self.ports[0]

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern, timeout=5.0, count=1):
        """The COUNT-th match of the regex PATTERN (multi-line) in the log."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            found = list(rx.finditer(self.log()))
            if len(found) >= count:
                return found[count - 1]
            if exited or time.monotonic() >= deadline:
                state = f"exited with {self.proc.returncode}" if exited else "running"
                raise AssertionError(f"log has {len(found)} of {count} lines matching "
                                     f"{pattern!r} (daemon {state}); log:\n{self.tail()}")
            time.sleep(0.01)

    def count_log(self, pattern):
        return len(re.findall(pattern, self.log(), re.M))

    def tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    def connect(self, index=0, **kw):
        return connect(self.hosts[index], self.ports[index], **kw)

    def rss_kib(self):
        return proc_status(self.pid, "VmRSS")

    def cpu_seconds(self):
        return proc_cpu_seconds(self.pid)

    def signal(self, signo):
        self.proc.send_signal(signo)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"epolld still running {timeout} s later; log:\n{self.tail()}")

    def stop(self):
        """SIGTERM, then SIGKILL if it does not go; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        return self.proc.returncode


def ini_text(listen, server=None, level="info"):
    lines = ["[server]"] + [f"listen = {a}" for a in listen]
    lines += [f"{k} = {v}" for k, v in (server or {}).items()]
    if level is not None:
        lines += ["", "[log]", f"level = {level}"]
    return "\n".join(lines) + "\n"


def _host_of(spec):
    """The address a client uses for a listen host: '[::1]' -> '::1', '*' -> 127.0.0.1."""
    if spec == "*":
        return "127.0.0.1"
    return spec.strip("[]")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, for fixtures to look at."""
    outcome = yield
    setattr(item, "report_" + call.when, outcome.get_result())


def stop_all(started, request):
    """Fixture teardown: stops every daemon; with a failed test prints their
    logs; fails the test if any log holds a sanitizer report."""
    failed = getattr(request.node, "report_call", None)
    failed = failed is not None and failed.failed
    reports = []
    for d in started:
        status = d.proc.poll()
        d.stop()
        if failed:  # shown with the failure, under "Captured stdout teardown"
            state = "running" if status is None else f"had exited with status {status}"
            print(f"--- epolld pid {d.pid} ({state} at teardown), {d.log_path}:\n{d.tail(60)}")
        if SANITIZER_REPORT.search(d.log()):
            reports.append(d.tail(80))
    assert not reports, "sanitizer report in the daemon's log:\n" + "\n".join(reports)


@pytest.fixture
def epolld(tmp_path, request):
    """A factory: epolld(listen=("127.0.0.1",), level="info", **server_keys).

    Each listen host gets its own free port; a start that loses a port race
    (exit 71) is retried with new ports. Returns a started Daemon."""
    started = []
    serial = [0]

    def start(listen=("127.0.0.1",), level="info", ready_timeout=10.0, **server):
        for attempt in range(5):
            serial[0] += 1
            ports = [free_port(_host_of(h)) for h in listen]
            addrs = [f"{h}:{p}" for h, p in zip(listen, ports)]
            config = tmp_path / f"epolld-{serial[0]}.ini"
            config.write_text(ini_text(addrs, server, level))
            log_path = tmp_path / f"epolld-{serial[0]}.log"
            with open(log_path, "wb") as log, open(os.devnull, "wb") as out:
                proc = subprocess.Popen([EPOLLD, "-c", str(config)], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=log, env=daemon_env())
            d = Daemon(proc, config, log_path, ports, [_host_of(h) for h in listen])
            started.append(d)
            deadline = time.monotonic() + ready_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                # Below level info there is no "started" line: then ready
                # means every port is in state LISTEN.
                if " started: " in d.log() if level in ("info", "debug") \
                        else set(ports) <= listening_ports():
                    return d
                time.sleep(0.01)
            if proc.poll() == EX_OSERR and "Address already in use" in d.log():
                continue
            d.stop()
            raise AssertionError(f"epolld did not start (status {proc.returncode}); "
                                 f"log:\n{d.tail()}")
        raise AssertionError("no free port found in 5 attempts")

    yield start
    stop_all(started, request)
