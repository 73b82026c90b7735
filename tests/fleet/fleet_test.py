#!/usr/bin/python3
"""A fleet of three epolld behind HAProxy, in network namespaces (issue 11).

Hosts are network namespaces joined by a bridge inside a sixth, "switch"
namespace (netns.py), on 198.18.0.0/23, the range set aside for test
networks; nothing is routed to or from the namespace the suite runs in:

    client    198.18.0.10   this script's sockets (setns), load generator
    balancer  198.18.0.2    haproxy -db -f <conf/haproxy.cfg, addresses changed>
    b1 b2 b3  198.18.1.1-3  the built epolld, proxy_protocol = yes,
                            proxy_from = 198.18.0.2/32, proxy_timeout = 2

The story, each step printing PASS with its figures or FAIL with what it
saw (a failed step ends the run): headers refused and timed out at a
backend reached directly; HAProxy's checks; 600 clients spread over the
backends, whose logs name the client; kill -9 of a backend, with the
failures before and after HAProxy marks it DOWN; its restart; a rolling
upgrade (SIGUSR2) of all three while 300 connections are held; and, for
information, ping-pong through HAProxy beside a direct one.

Needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN, and haproxy; without them
the suite is skipped (exit 77) with the reason, unless
EPOLLD_REQUIRE_FLEET_TEST=1 (CI), which makes it a failure. Everything it
started is stopped by pid and every namespace deleted at the end, also
after a failure or SIGTERM; namespaces left by a run that was killed are
removed at the next start.
"""

import argparse
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import haproxy
import netns
from netns import wait_until

PORT = 8001
CLIENT, BALANCER = "198.18.0.10", "198.18.0.2"
BACKENDS = {"b1": "198.18.1.1", "b2": "198.18.1.2", "b3": "198.18.1.3"}
SERVER_OF = {"b1": "epolld1", "b2": "epolld2", "b3": "epolld3"}
PREFIX_LEN = 23  # 198.18.0.0/23: one segment for all
PROXY_TIMEOUT = 2
SPREAD_CONNS = 600
UPGRADE_CONNS = 300
UPGRADE_PENDING = 30  # of them, with a reply left unread across the upgrade
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def log(msg):
    print(msg, flush=True)


class Skip(Exception):
    pass


# --- clients --------------------------------------------------------------

def recv_exact(s, n):
    """n bytes, or fewer if the peer closed first."""
    got = b""
    while len(got) < n:
        b = s.recv(n - len(got))
        if not b:
            break
        got += b
    return got


def hello(addr, timeout=3.0, first=b""):
    """A connection that sent first + ping and got exactly Hi!."""
    s = socket.create_connection((addr, PORT), timeout=timeout)
    try:
        s.sendall(first + b"ping")
        got = recv_exact(s, 3)
        if got != b"Hi!":
            raise OSError(f"got {got!r} instead of Hi!")
        return s
    except BaseException:
        s.close()
        raise


def v2_header(src, sport, dst, dport):
    """A PROXY v2 header: command PROXY, TCP over IPv4."""
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def closed_without_reply(s, timeout):
    """(closed, bytes read, seconds until the close)."""
    t0, data = time.monotonic(), b""
    s.settimeout(timeout)
    try:
        while True:
            b = s.recv(64)
            if not b:
                return True, data, time.monotonic() - t0
            data += b
    except ConnectionResetError:
        return True, data, time.monotonic() - t0
    except socket.timeout:
        return False, data, time.monotonic() - t0


def nothing_more(socks, wait=0.3):
    """The sockets among socks that have anything more to read."""
    r, _, _ = select.select(socks, [], [], wait)
    return r


# --- the fleet ------------------------------------------------------------

class Backend:
    def __init__(self, name, addr, tmp, binary):
        self.name, self.addr, self.binary = name, addr, binary
        self.config = os.path.join(tmp, f"{name}.ini")
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.proc = None
        with open(self.config, "w") as f:
            f.write(f"[server]\nlisten = {addr}:{PORT}\n"
                    f"proxy_protocol = yes\nproxy_from = {BALANCER}/32\n"
                    f"proxy_timeout = {PROXY_TIMEOUT}\n[log]\nlevel = info\n")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def mark(self):
        return len(self.log())

    def since(self, mark):
        return self.log()[mark:]

    def lines(self, mark, what):
        return [ln for ln in self.since(mark).splitlines() if what in ln]


def listening_in(net, role, addr):
    r = net.run_in(role, ["ss", "-Htln", f"src {addr}:{PORT}"], timeout=5)
    return r.returncode == 0 and r.stdout.strip() != ""


class Fleet:
    def __init__(self, a, tmp):
        self.a, self.tmp = a, tmp
        self.net = netns.Network(PREFIX_LEN)
        self.net.add("client", CLIENT)
        self.net.add("balancer", BALANCER)
        self.b = {}
        for name, addr in BACKENDS.items():
            self.net.add(name, addr)
            self.b[name] = Backend(name, addr, tmp, a.epolld)
        self.sock = os.path.join(tmp, "haproxy.sock")
        self.haproxy = None
        self.figures = {}

    def start_backend(self, name):
        b = self.b[name]
        b.proc = self.net.start(name, [b.binary, "-c", b.config], b.log_path)
        wait_until(lambda: listening_in(self.net, name, b.addr) or b.proc.poll() is not None,
                   10, f"{name} to listen")
        if b.proc.poll() is not None:
            raise AssertionError(f"{name} exited with {b.proc.returncode}: {b.log()[-2000:]}")

    def start_haproxy(self):
        with open(self.a.haproxy_cfg) as f:
            text = haproxy.readied(f.read(), sock=self.sock, balancer=BALANCER,
                                   **{n: BACKENDS[n] for n in BACKENDS})
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(text)
        r = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"haproxy -c: {r.stdout}{r.stderr}")
        self.haproxy_log = os.path.join(self.tmp, "haproxy.log")
        self.haproxy = self.net.start("balancer", ["haproxy", "-db", "-f", cfg],
                                      self.haproxy_log)
        wait_until(lambda: os.path.exists(self.sock) or self.haproxy.poll() is not None,
                   10, "haproxy's stats socket")
        if self.haproxy.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.haproxy.returncode}")

    def servers(self):
        return haproxy.servers(self.sock)

    def status(self, name):
        return self.servers()[SERVER_OF[name]]["status"]

    def connections(self, ns, addr, n, timeout=3.0):
        """n connections from ns to addr, each with its Hi!; (socks, errors)."""
        socks, errors = [], []
        with netns.inside(self.net.hosts[ns]):
            for _ in range(n):
                try:
                    socks.append(hello(addr, timeout))
                except OSError as e:
                    errors.append(str(e))
        return socks, errors

    def connect_from(self, ns, addr, timeout=3.0):
        with netns.inside(self.net.hosts[ns]):
            return socket.create_connection((addr, PORT), timeout=timeout)


def close_all(socks):
    for s in socks:
        s.close()


def sched(pid):
    """(on-CPU ns, timeslices run) of a process, from schedstat."""
    run = slices = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            v = f.read().split()
        run, slices = run + int(v[0]), slices + int(v[2])
    return run, slices


# How a backend's info lines name a connection that came with a header:
# (what picks the line, the client endpoint and the balancer's).
LOGGED = {
    "accept": ("accepted connection", r" from (\S+) via (\S+) \(PROXY v2, fd \d+\)$"),
    "close": ("closed connection", r"; client (\S+) via (\S+) \(fd \d+\)$"),
}


# --- the steps ------------------------------------------------------------

def step_direct_no_header(f):
    """A client inside proxy_from that sends no header is closed, and logged."""
    b = f.b["b1"]
    mark = b.mark()
    s = f.connect_from("balancer", b.addr)
    s.sendall(b"ping\r\n")
    closed, data, secs = closed_without_reply(s, PROXY_TIMEOUT + 3)
    s.close()
    assert closed and data == b"", f"closed={closed}, read {data!r}"
    line = wait_until(lambda: b.lines(mark, BALANCER + ":"), 5, "a log line naming the peer")
    return f"closed after {secs * 1000:.0f} ms with no reply; logged: {line[-1].strip()}"


def step_outside_proxy_from(f):
    """A peer outside proxy_from is closed even with a valid header, and logged."""
    b = f.b["b1"]
    mark = b.mark()
    s = f.connect_from("client", b.addr)
    s.sendall(v2_header("203.0.113.7", 4242, b.addr, PORT) + b"ping")
    closed, data, secs = closed_without_reply(s, PROXY_TIMEOUT + 3)
    s.close()
    assert closed and data == b"", f"closed={closed}, read {data!r}"
    line = wait_until(lambda: b.lines(mark, CLIENT + ":"), 5, "a log line naming the peer")
    assert "203.0.113.7" not in b.since(mark), "the untrusted header's address was used"
    return f"closed after {secs * 1000:.0f} ms with no reply; logged: {line[-1].strip()}"


def step_slow_header(f):
    """A partial header is closed after proxy_timeout; no CPU while waiting."""
    b = f.b["b1"]
    mark = b.mark()
    s = f.connect_from("balancer", b.addr)
    t0 = time.monotonic()
    s.sendall(v2_header(CLIENT, 5555, b.addr, PORT)[:10])
    time.sleep(0.3)
    before = sched(b.proc.pid)
    time.sleep(PROXY_TIMEOUT - 0.6)
    after = sched(b.proc.pid)
    closed, data, _ = closed_without_reply(s, PROXY_TIMEOUT + 3)
    secs = time.monotonic() - t0
    s.close()
    assert closed and data == b"", f"closed={closed}, read {data!r}"
    assert PROXY_TIMEOUT - 0.1 <= secs <= PROXY_TIMEOUT + 1.0, \
        f"closed after {secs:.2f} s, proxy_timeout is {PROXY_TIMEOUT}"
    cpu_us, slices = (after[0] - before[0]) / 1000, after[1] - before[1]
    assert slices == 0 and cpu_us == 0, \
        f"the backend ran {slices} time(s), {cpu_us:.0f} us, while it waited"
    line = wait_until(lambda: b.lines(mark, BALANCER + ":"), 5, "a log line naming the peer")
    return (f"closed {secs:.2f} s after the first bytes (proxy_timeout = {PROXY_TIMEOUT}); "
            f"over {PROXY_TIMEOUT - 0.6:.1f} s of waiting the backend ran {slices} times, "
            f"{cpu_us:.0f} us; logged: {line[-1].strip()}")


def step_checks(f):
    """HAProxy's checks mark every backend UP; the backends log no check at info."""
    marks = {n: b.mark() for n, b in f.b.items()}
    t0 = time.monotonic()
    f.start_haproxy()
    wait_until(lambda: haproxy.all_up(f.sock), 15, "every backend UP (L7OK)")
    up_after = time.monotonic() - t0
    # Let a few more checks run (every 2 s) before reading the logs.
    time.sleep(4.5)
    assert haproxy.all_up(f.sock), f"not all UP any more: {f.servers()}"
    for n, b in f.b.items():
        text = b.since(marks[n])
        assert "connection" not in text, f"{n} logged a check at info: {text.strip()[-500:]}"
    return (f"all three UP (L7OK) {up_after:.1f} s after haproxy started; "
            f"no backend logged a line in {time.monotonic() - t0:.1f} s of checks")


def step_spread(f):
    """600 clients all get exactly Hi!, spread over the three backends, whose
    accept and close lines name the client."""
    marks = {n: b.mark() for n, b in f.b.items()}
    socks, errors = f.connections("client", BALANCER, SPREAD_CONNS)
    try:
        assert not errors, f"{len(errors)} failed: {errors[:3]}"
        extra = nothing_more(socks)
        assert not extra, f"{len(extra)} connections got more than one Hi!"
        ours = {"%s:%d" % s.getsockname() for s in socks}
        scur = {n: int(r["scur"]) for n, r in f.servers().items()}
    finally:
        close_all(socks)
    spread, named = {}, {"accept": set(), "close": set()}
    for n, b in f.b.items():
        spread[n] = len(b.lines(marks[n], "accepted connection"))
        wait_until(lambda: len(b.lines(marks[n], "closed connection")) >= spread[n], 10,
                   f"{n}'s close lines")
        for kind in named:
            lines = b.lines(marks[n], LOGGED[kind][0])
            got = [re.search(LOGGED[kind][1], ln) for ln in lines]
            bad = [ln for ln, m in zip(lines, got)
                   if not m or not m.group(2).startswith(BALANCER + ":")]
            assert not bad, f"{n}: a {kind} line does not name client and balancer: {bad[0]}"
            named[kind] |= {m.group(1) for m in got}
    for kind, endpoints in named.items():
        assert endpoints == ours, (f"{kind} lines name {len(endpoints - ours)} endpoints "
                                   f"that are not the clients', and miss {len(ours - endpoints)}")
    assert sum(spread.values()) == SPREAD_CONNS, f"accept lines: {spread}"
    assert min(spread.values()) >= SPREAD_CONNS // 6, f"uneven: {spread}"
    f.figures["spread"] = spread
    return (f"{SPREAD_CONNS} of {SPREAD_CONNS} got exactly Hi!, held at once; accept and close "
            f"lines per backend: " + ", ".join(f"{n} {c}" for n, c in spread.items())
            + f" (HAProxy scur {scur}), each naming one of the {SPREAD_CONNS} client "
            f"endpoints ({CLIENT}:PORT) via the balancer")


def churn_loop(ns, stop, results):
    """Sequential short connections until stop is set (at most 20 s)."""
    netns.enter(ns)
    deadline = time.monotonic() + 20
    while not stop.is_set() and time.monotonic() < deadline and len(results) < 20000:
        t = time.monotonic()
        try:
            hello(BALANCER, timeout=3.0).close()
            results.append((t, None, time.monotonic() - t))
        except OSError as e:
            results.append((t, str(e) or type(e).__name__, time.monotonic() - t))
        time.sleep(0.01)


def step_kill(f):
    """kill -9 of a backend: 0 failures for new connections once DOWN."""
    victim = f.b["b2"]
    held, errors = f.connections("client", BALANCER, 30)
    assert not errors, errors
    stop, results = threading.Event(), []
    th = threading.Thread(target=churn_loop, args=(f.net.hosts["client"], stop, results))
    th.start()
    try:
        time.sleep(1.0)
        t_kill = time.monotonic()
        victim.proc.kill()
        victim.proc.wait(timeout=5)
        wait_until(lambda: f.status("b2").startswith("DOWN"), 15, "b2 DOWN")
        t_down = time.monotonic()
        time.sleep(4.0)
    finally:
        stop.set()
        th.join(timeout=30)
    b2 = f.servers()["epolld2"]
    retried = f"HAProxy counted for b2 {b2['econ']} connect errors, {b2['wretr']} retries, " \
              f"{b2['wredis']} redispatches"
    # The held connections: those on b2 see the close, the others still work.
    eof = [s for s in held if s in nothing_more(held, 1.0)]
    for s in eof:
        assert recv_exact(s, 3) == b"", "a held connection got bytes, not a close"
    alive = [s for s in held if s not in eof]
    for s in alive:
        s.sendall(b"ping")
        assert recv_exact(s, 3) == b"Hi!"
    close_all(held)
    before = [r for r in results if r[0] < t_down]
    after = [r for r in results if r[0] >= t_down]
    fails_before = [r for r in before if r[1]]
    fails_after = [r for r in after if r[1]]
    assert len(after) >= 50, f"only {len(after)} connections after DOWN"
    assert not fails_after, f"{len(fails_after)} failed after DOWN: {fails_after[:3]}"
    span = (f", from +{fails_before[0][0] - t_kill:.2f} s to +{fails_before[-1][0] - t_kill:.2f} s"
            if fails_before else "")
    window = [r for r in before if r[0] >= t_kill]
    slow = max((r[2] for r in window if not r[1]), default=0)
    slow_after = max(r[2] for r in after)
    f.figures["kill"] = (len(fails_before), len(window), t_down - t_kill, len(after))
    return (f"DOWN {t_down - t_kill:.2f} s after kill -9; in that window {len(fails_before)} of "
            f"{len(window)} new connections failed{span}, the slowest Hi! took {slow:.3f} s "
            f"(retried elsewhere); after DOWN 0 of {len(after)} failed, slowest {slow_after:.3f} s."
            f" Of 30 held: {len(eof)} (on b2) saw the close at once, {len(alive)} kept working. "
            + retried)


def step_restart(f):
    """The restarted backend is marked UP and takes new connections again."""
    t0 = time.monotonic()
    f.start_backend("b2")
    wait_until(lambda: haproxy.all_up(f.sock), 15, "b2 UP again")
    up = time.monotonic() - t0
    others, errors = f.connections("client", BALANCER, 20)
    assert not errors, errors
    try:
        stot0 = int(f.servers()["epolld2"]["stot"])
        fresh, errors = f.connections("client", BALANCER, 30)
        close_all(fresh)
        assert not errors, errors
        got = int(f.servers()["epolld2"]["stot"]) - stot0
    finally:
        close_all(others)
    assert got >= 10, f"b2 took {got} of 30 new connections"
    return f"UP {up:.1f} s after its start; took {got} of 30 new connections (leastconn)"


def reexecuted(b, starts_before):
    text = b.log()
    if "re-exec of" in text:
        raise AssertionError(f"{b.name}: {text[text.index('re-exec of'):][:300]}")
    return text.count(" started: ") > starts_before


def step_rolling_upgrade(f):
    """SIGUSR2 to each backend in turn while 300 connections are held: 0 lost,
    every pending reply delivered exactly once."""
    socks, errors = f.connections("client", BALANCER, UPGRADE_CONNS)
    try:
        assert not errors, errors
        pending = socks[::UPGRADE_CONNS // UPGRADE_PENDING]
        for s in pending:
            s.sendall(b"ping")  # its Hi! stays unread across the upgrade
        chkdown0 = {n: int(r["chkdown"]) for n, r in f.servers().items()}
        held = {}
        for n, b in f.b.items():
            mark, starts = b.mark(), b.log().count(" started: ")
            os.kill(b.proc.pid, signal.SIGUSR2)
            wait_until(lambda: reexecuted(b, starts), 15, f"{n}'s re-exec")
            m = re.search(r"re-executing \S+ with (\d+) connection", b.since(mark))
            held[n] = int(m.group(1))
            assert b.proc.poll() is None
        states = f.servers()
        assert all(r["status"] == "UP" for r in states.values()), states
        chkdown = {n: int(r["chkdown"]) - chkdown0[n] for n, r in states.items()}
        assert not any(chkdown.values()), f"marked DOWN during the upgrade: {chkdown}"
        lost = 0
        for s in pending:
            if recv_exact(s, 3) != b"Hi!":
                lost += 1
        for s in socks:
            try:
                s.sendall(b"ping")
                lost += recv_exact(s, 3) != b"Hi!"
            except OSError:
                lost += 1
        extra = nothing_more(socks)
    finally:
        close_all(socks)
    assert lost == 0, f"{lost} of {UPGRADE_CONNS} connections lost"
    assert not extra, f"{len(extra)} connections got a reply twice"
    f.figures["upgrade"] = (UPGRADE_CONNS, held)
    return (f"{UPGRADE_CONNS} held through HAProxy ({UPGRADE_PENDING} with an unread reply), "
            f"each backend re-executed in turn holding {held}: 0 lost, each pending Hi! "
            "delivered once, no backend marked DOWN")


def loadgen(f, role, addr, conns, first=None):
    argv = [f.a.loadgen, "pingpong", "--host", addr, "--port", str(PORT),
            "--conns", str(conns), "--warmup", "0.3", "--duration", "2"]
    if first:
        argv += first
    r = f.net.run_in(role, argv, timeout=60)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise AssertionError(f"loadgen: exit {r.returncode}: {r.stderr.strip()}")
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def step_pingpong(f):
    """For information: ping-pong through HAProxy beside a direct one."""
    rows = []
    for conns in (1, 16):
        via = loadgen(f, "client", BALANCER, conns)
        direct = loadgen(f, "balancer", BACKENDS["b1"], conns, ["--proxy-v2", CLIENT])
        for label, r in (("via HAProxy", via), ("direct", direct)):
            assert r["errors"] == "0", f"{label}: {r['errors']} errors"
            rows.append(f"{conns:>2} conn {label:12} {float(r['rps']):>9,.0f} req/s  "
                        f"p50 {float(r['p50_us']):>7.1f} us  p99 {float(r['p99_us']):>7.1f} us")
    f.figures["pingpong"] = rows
    return "\n    " + "\n    ".join(rows)


DIRECT = [step_direct_no_header, step_outside_proxy_from, step_slow_header]
THROUGH_HAPROXY = [step_checks, step_spread, step_kill, step_restart,
                   step_rolling_upgrade, step_pingpong]


def step_backends(f):
    """The three backends start with proxy_protocol = yes and listen."""
    for name in f.b:
        f.start_backend(name)
    return ", ".join(f"{n} on {b.addr}:{PORT} (pid {b.proc.pid})" for n, b in f.b.items())


def story(f):
    passed = 0
    for step in [step_backends] + DIRECT + THROUGH_HAPROXY:
        t0 = time.monotonic()
        try:
            what = step(f)
        except (AssertionError, OSError, subprocess.SubprocessError) as e:
            log(f"FAIL {step.__name__}: {step.__doc__.splitlines()[0]}\n  {type(e).__name__}: {e}")
            log(f"{passed} passed, 1 failed")
            return False
        passed += 1
        log(f"PASS {step.__name__} ({time.monotonic() - t0:.1f} s): {what}")
    log(f"{passed} passed, 0 failed")
    return True


def preflight(a):
    if os.geteuid() != 0:
        raise Skip("needs root (network namespaces)")
    cap = netns.missing_capability()
    if cap:
        raise Skip(f"needs {cap} (network namespaces, veth, bridge); "
                   "this looks like a container without it")
    if shutil.which("haproxy") is None:
        raise Skip("haproxy is not installed (apt-get install haproxy)")
    if shutil.which("ss") is None or shutil.which("ip") is None:
        raise Skip("iproute2 (ip, ss) is not installed")
    for path in (a.epolld, a.loadgen):
        if not os.access(path, os.X_OK):
            raise Skip(f"{path}: not built")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epolld", default=os.environ.get("EPOLLD_BIN"))
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--haproxy-cfg", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the logs' directory")
    a = ap.parse_args()
    required = os.environ.get("EPOLLD_REQUIRE_FLEET_TEST") == "1"
    try:
        preflight(a)
    except Skip as e:
        log(f"SKIP fleet suite: {e}" + (" (required: EPOLLD_REQUIRE_FLEET_TEST=1)"
                                         if required else ""))
        return 1 if required else 77
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stale = netns.remove_stale()
    if stale:
        log(f"removed namespaces left by an earlier run: {' '.join(stale)}")
    tmp = tempfile.mkdtemp(prefix="epolld-fleet-")
    t0, ok, f = time.monotonic(), False, None
    try:
        f = Fleet(a, tmp)
        ok = story(f)
    finally:
        if f is not None:
            f.net.remove()
        log(f"suite time {time.monotonic() - t0:.1f} s")
        if ok and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"logs: {tmp}")
    return 0 if ok else 1


def on_signal(signum, frame):
    raise KeyboardInterrupt  # unwinds through main's finally


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    sys.exit(main())
