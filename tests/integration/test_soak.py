"""test_soak.py - a bounded chaos soak of the real daemon.

One daemon (EPOLLD_BIN) on a free loopback port, max_connections = 200,
idle_timeout = 2, with its stderr in a file and a fake NOTIFY_SOCKET. A
probe process connects once at the start and keeps asking; meanwhile
client threads pick random behaviours (connect and close; ping-pong;
partial data then a stall; bursts never read; RST in the middle of a
reply; half-close; silence past idle_timeout), a flooder opens more
connections than max_connections at once, and a reloader rewrites the INI
file (valid and invalid edits) and sends SIGHUP at random times, checking
each outcome through READY=1/STATUS= and which extra listeners answer.

At the end the daemon must be alive, back to the descriptors it had before
the soak and to its RSS after a warm-up (+ a small margin), every probe
answer must have come within its bound (p99 <= 100 ms), and SIGTERM must
make it exit 0 within 1 s.

Environment:
  EPOLLD_SOAK_SECONDS  length of the chaos phase (default 20, valgrind 10)
  EPOLLD_SOAK_SEED     RNG seed (default: random; printed either way)
  EPOLLD_SOAK_VALGRIND=1  run the daemon under valgrind --leak-check=full
                       (--error-exitcode=1, definite leaks are errors):
                       fewer clients, looser time bounds, and valgrind's
                       exit status must be 0.
The figures are printed at the end (meson's test log keeps them).
"""
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import soakhelpers as sh  # noqa: E402
from helpers import free_port, has_ipv6_loopback, proc_fds, proc_status  # noqa: E402
from launcher import EPOLLD as BIN, SANITIZER_REPORT  # noqa: E402

VALGRIND = os.environ.get("EPOLLD_SOAK_VALGRIND") == "1"
SECONDS = float(os.environ.get("EPOLLD_SOAK_SECONDS") or (10 if VALGRIND else 20))
HOST = "127.0.0.1"
REPLY = b"Hi!"
MAX_CONNECTIONS = 200
IDLE = 2


class Limits:
    """Bounds that depend on how slow the daemon is run."""

    def __init__(self, valgrind, asan):
        self.workers = 4 if valgrind else 12
        self.warmup = 3.0
        self.start = 60.0 if valgrind else 10.0       # until READY=1
        self.reload = 20.0 if valgrind else 5.0       # SIGHUP -> READY=1
        self.serve = 20.0 if valgrind else 3 * IDLE + 3.0  # a new client, even via the backlog
        self.idle_slack = 4.0 if valgrind else 1.0    # idle close after IDLE, at most this late
        self.settle = 20.0 if valgrind else 5.0       # descriptors back after the load
        self.stop = 30.0 if valgrind else 1.0         # SIGTERM -> exit
        self.probe_interval = 0.05 if valgrind else 0.02
        self.probe_timeout = 5.0 if valgrind else 2.0
        self.probe_p99_ms = 1000.0 if valgrind else 100.0
        # RSS after vs. after the warm-up: ASan keeps freed blocks in its
        # quarantine and valgrind has its own heap, so they get more room.
        self.rss_margin_kib = 65536 if valgrind else 8192 if asan else 1024


def sleep_until(stop, seconds):
    """Sleeps SECONDS unless STOP is set first; True if it was."""
    return stop.wait(seconds)


class Soak:
    def __init__(self, tmp, seed, launcher):
        self.tmp = tmp
        self.launcher = launcher
        self.seed = seed
        self.master = random.Random(seed)
        self.asan = sh.is_asan_build(BIN)
        self.lim = Limits(VALGRIND, self.asan)
        self.port = free_port()
        self.extra_port = free_port()
        self.ipv6 = has_ipv6_loopback()
        self.extra6_port = free_port("::1") if self.ipv6 else None
        self.fresh_port = free_port()  # opened only by reloads that must fail
        self.busy = socket.socket()  # a port we hold: binding it must fail
        self.busy.bind((HOST, 0))
        self.busy.listen(1)
        self.busy_port = self.busy.getsockname()[1]
        self.ini = tmp / "epolld.ini"
        self.log = tmp / "epolld.log"
        self.vglog = tmp / "valgrind.log"
        self.stats = Counter()
        self.problems = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.valid = {"extra": False, "extra6": False, "level": "notice",
                      "max_events": 1024, "backlog": 4096}
        self.proc = self.probe = self.notify = None
        self.flood_waits = []

    # --- bookkeeping --------------------------------------------------------

    def count(self, what, n=1):
        with self.lock:
            self.stats[what] += n

    def problem(self, what):
        with self.lock:
            self.problems.append(f"[{time.monotonic() - self.t0:7.2f}s] {what}")

    # --- configuration ------------------------------------------------------

    def render(self, cfg, extra_lines=()):
        lines = ["; written by test_soak.py", "[server]", f"listen = {HOST}:{self.port}"]
        if cfg["extra"]:
            lines.append(f"listen = {HOST}:{self.extra_port}")
        if cfg["extra6"]:
            lines.append(f"listen = [::1]:{self.extra6_port}")
        lines += list(extra_lines)
        lines += [f"max_connections = {MAX_CONNECTIONS}", f"idle_timeout = {IDLE}",
                  f"max_events = {cfg['max_events']}", f"backlog = {cfg['backlog']}",
                  "[log]", f"level = {cfg['level']}"]
        return "\n".join(lines) + "\n"

    def write_ini(self, text):
        tmp = self.ini.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.ini)

    def random_valid(self, rng):
        return {"extra": rng.random() < 0.5, "extra6": self.ipv6 and rng.random() < 0.3,
                "level": rng.choice(["notice", "info"]),
                "max_events": rng.choice([1, 2, 7, 64, 1024]),
                "backlog": rng.choice([512, 1024, 4096])}

    INVALID = ["range", "level", "syntax", "unknown_key", "bad_addr", "duplicate_listen",
               "busy_port", "missing"]

    def random_invalid(self, rng, deck):
        """(kind, text or None for 'no file at all'); kinds come from a
        shuffled DECK so that every kind is dealt before any repeats."""
        if not deck:
            deck.extend(rng.sample(self.INVALID, len(self.INVALID)))
        kind = deck.pop()
        cfg = self.random_valid(rng)
        if kind == "range":
            return kind, self.render(cfg).replace(f"max_events = {cfg['max_events']}",
                                                  "max_events = 0")
        if kind == "level":
            return kind, self.render(cfg).replace(f"level = {cfg['level']}", "level = loud")
        if kind == "syntax":
            return kind, self.render(cfg, ["just some words"])
        if kind == "unknown_key":
            return kind, self.render(cfg, ["port = 80"])
        if kind == "bad_addr":
            return kind, self.render(cfg, ["listen = localhost:1"])
        if kind == "duplicate_listen":
            return kind, self.render(cfg, [f"listen = {HOST}:{self.port}"])
        if kind == "busy_port":  # valid text; a new listener opens, the next fails
            return kind, self.render(cfg, [f"listen = {HOST}:{self.fresh_port}",
                                           f"listen = {HOST}:{self.busy_port}"])
        return kind, None

    # --- the daemon ---------------------------------------------------------

    def start(self):
        self.write_ini(self.render(self.valid))
        self.notify = self.launcher.notify()
        wrapper = ["valgrind", "--leak-check=full", "--error-exitcode=1",
                   "--errors-for-leak-kinds=definite", f"--log-file={self.vglog}"]
        self.proc = self.launcher.start(self.ini, notify=self.notify, stderr=self.log,
                                        wrapper=wrapper if VALGRIND else (),
                                        ready_timeout=self.lim.start).proc

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def alive(self):
        return self.proc.poll() is None

    def reload(self, text, expect_ok, what):
        """Writes TEXT (None: removes the file), sends SIGHUP and checks the
        outcome that READY=1/STATUS= reports. Returns False if the daemon
        did not answer at all."""
        if text is None:
            self.ini.unlink()
        else:
            self.write_ini(text)
        os.kill(self.proc.pid, signal.SIGHUP)
        try:
            msg = self.notify.next_with("READY", "1", self.lim.reload).text
        except AssertionError:
            self.problem(f"reload ({what}): no READY=1 within {self.lim.reload} s")
            return False
        failed = "reload failed" in msg
        if failed == expect_ok:
            self.problem(f"reload ({what}): expected {'success' if expect_ok else 'failure'}, "
                         f"got {msg!r}")
        self.count("reloads_ok" if not failed else "reloads_refused")
        return True

    def check_extra_listeners(self, what):
        """The extra listeners answer exactly when the running config has
        them; the one only failed reloads open never does."""
        for key, host, port in (("extra", HOST, self.extra_port),
                                ("extra6", "::1", self.extra6_port),
                                ("fresh", HOST, self.fresh_port)):
            if port is None:
                continue
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                try:
                    s.connect((host, port))
                    answered = True
                    self.count("connections")
                except ConnectionRefusedError:
                    answered = False
                except OSError as e:
                    self.problem(f"after reload ({what}): connect to {host}:{port}: {e!r}")
                    continue
            want = self.valid.get(key, False)
            if answered != want:
                self.problem(f"after reload ({what}): {host}:{port} "
                             f"{'answers' if answered else 'refuses'}, config says "
                             f"{'listen' if want else 'not'}")

    # --- clients ------------------------------------------------------------

    def connect(self, port=None, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(self.lim.serve)
            s.connect((HOST, port or self.port))
        except BaseException:
            s.close()
            raise
        self.count("connections")
        return s

    @staticmethod
    def recv_exact(s, n, deadline):
        got = b""
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"got {got!r} of {n} bytes")
            s.settimeout(left)
            chunk = s.recv(n - len(got))
            if not chunk:
                raise ConnectionError(f"EOF after {got!r}")
            got += chunk
        return got

    @staticmethod
    def read_to_end(s, deadline):
        """(data, 'eof' | 'reset' | 'timeout')."""
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return data, "timeout"
            s.settimeout(left)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                return data, "timeout"
            except ConnectionResetError:
                return data, "reset"
            if not chunk:
                return data, "eof"
            data += chunk

    @staticmethod
    def rst_close(s):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()

    def b_connect_close(self, rng):
        self.connect().close()

    def b_pingpong(self, rng):
        with self.connect() as s:
            for i in range(rng.randint(1, 10)):
                s.sendall(rng.randbytes(rng.randint(1, 512)))
                got = self.recv_exact(s, 3, time.monotonic() + self.lim.serve)
                if got != REPLY:
                    return f"ask {i}: got {got!r}"
        return None

    def b_partial_stall(self, rng):
        with self.connect() as s:
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: loc"[:rng.randint(1, 36)])
            time.sleep(rng.uniform(0.05, 1.5))
            got = self.recv_exact(s, 3, time.monotonic() + self.lim.serve)
            if got != REPLY:
                return f"got {got!r}"
        return None

    def b_burst_noread(self, rng):
        s = self.connect(rcvbuf=4096)
        try:
            s.settimeout(1.0)
            for _ in range(rng.randint(5, 300)):
                try:
                    s.sendall(b"b" * rng.randint(1, 16384))
                except socket.timeout:
                    self.count("burst_noread_blocked")  # backpressure held us up
                    break
                if rng.random() < 0.5:
                    time.sleep(0.001)
        finally:
            s.close()  # unread replies: the kernel sends an RST
        return None

    def b_rst_mid_reply(self, rng):
        s = self.connect()
        s.sendall(rng.randbytes(rng.randint(1, 2048)))
        time.sleep(rng.choice([0, 0, 0.0005, 0.002]))
        self.rst_close(s)
        return None

    def b_half_close(self, rng):
        with self.connect() as s:
            s.sendall(rng.randbytes(rng.randint(1, 1000)))
            s.shutdown(socket.SHUT_WR)
            data, end = self.read_to_end(s, time.monotonic() + self.lim.serve)
            if data != REPLY or end != "eof":
                return f"got {data!r} then {end}, want {REPLY!r} then EOF"
        return None

    def b_silent(self, rng):
        """Silence from the start: closed after IDLE, counted from accept."""
        start = time.monotonic()
        with self.connect() as s:
            data, end = self.read_to_end(s, start + IDLE + self.lim.serve)
            took = time.monotonic() - start
            if data or end != "eof" or took < IDLE - 0.15:
                return f"got {data!r} then {end} after {took:.2f} s, want EOF after {IDLE} s"
        return None

    def b_hello_silent(self, rng):
        """One answer, then silence: closed IDLE s after it, not much later."""
        with self.connect() as s:
            s.sendall(b"hello")
            got = self.recv_exact(s, 3, time.monotonic() + self.lim.serve)
            start = time.monotonic()
            data, end = self.read_to_end(s, start + IDLE + self.lim.idle_slack + 1.0)
            took = time.monotonic() - start
            if got != REPLY or data or end != "eof" or not (
                    IDLE - 0.15 <= took <= IDLE + self.lim.idle_slack):
                return (f"got {got!r}, then {data!r} and {end} after {took:.2f} s, "
                        f"want EOF after {IDLE} s")
        return None

    BEHAVIOURS = [("connect_close", 3), ("pingpong", 3), ("partial_stall", 2),
                  ("burst_noread", 2), ("rst_mid_reply", 3), ("half_close", 3),
                  ("silent", 1), ("hello_silent", 1)]

    def worker(self, rng):
        names = [n for n, _ in self.BEHAVIOURS]
        weights = [w for _, w in self.BEHAVIOURS]
        while not self.stop.is_set():
            name = rng.choices(names, weights)[0]
            try:
                why = getattr(self, "b_" + name)(rng)
            except OSError as e:
                why = repr(e)
            if why:
                self.problem(f"{name}: {why}")
            else:
                self.count(name)
            time.sleep(rng.uniform(0, 0.02))

    def flood_once(self, rng):
        """More connections at once than max_connections: each sends a byte,
        and each must get its answer, the last ones after waiting in the
        backlog until the daemon has room (idle_timeout makes room)."""
        n = MAX_CONNECTIONS + rng.randint(20, 60)
        # 0: the excess waits in the backlog until idle_timeout makes room.
        close_at_once = rng.choice([0.0, 0.1, 0.3])
        socks, sel = {}, selectors.DefaultSelector()
        start = time.monotonic()
        try:
            for _ in range(n):
                s = self.connect()
                s.setblocking(False)
                s.send(b"f")
                socks[s] = b""
                sel.register(s, selectors.EVENT_READ)
            self.count("flood_connections", n)
            deadline = start + self.lim.serve + IDLE
            while socks and any(v != REPLY for v in socks.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    waiting = sum(1 for v in socks.values() if v != REPLY)
                    return (f"{waiting} of {n} connections unanswered after "
                            f"{time.monotonic() - start:.1f} s")
                for key, _ in sel.select(timeout=min(left, 0.5)):
                    s = key.fileobj
                    try:
                        chunk = s.recv(16)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        return f"recv: {e!r}"
                    socks[s] += chunk
                    if socks[s] == REPLY or not chunk:
                        sel.unregister(s)
                        if not chunk:  # idled out before answering? never: it spoke
                            return f"EOF after {socks[s]!r}"
                        with self.lock:
                            self.flood_waits.append(time.monotonic() - start)
                        if rng.random() < close_at_once:  # make some room now
                            self.rst_close(s) if rng.random() < 0.5 else s.close()
                            del socks[s]
                    elif len(socks[s]) >= 3:
                        return f"got {socks[s]!r}"
            sleep_until(self.stop, rng.uniform(0, 1.0))
            return None
        finally:
            sel.close()
            for s in socks:
                self.rst_close(s) if rng.random() < 0.3 else s.close()

    def flooder(self, rng, first):
        delay = first
        while not sleep_until(self.stop, delay):
            try:
                why = self.flood_once(rng)
            except OSError as e:
                why = repr(e)
            if why:
                self.problem(f"flood: {why}")
            else:
                self.count("flood")
            delay = rng.uniform(1.0, 4.0)

    def reloader(self, rng, first):
        delay, deck = first, []
        while not sleep_until(self.stop, delay):
            if rng.random() < 0.5:
                cfg = self.random_valid(rng)
                if not self.reload(self.render(cfg), True, f"valid {cfg}"):
                    return
                self.valid = cfg
                self.check_extra_listeners(f"valid {cfg}")
            else:
                kind, text = self.random_invalid(rng, deck)
                if not self.reload(text, False, f"invalid {kind}"):
                    return
                self.count("reload_invalid_" + kind)
                self.check_extra_listeners(f"invalid {kind}")
            delay = rng.uniform(0.2, 1.5)

    def phase(self, seconds, first_flood, first_reload):
        self.stop.clear()
        threads = [threading.Thread(target=self.worker, args=(random.Random(self.master.random()),))
                   for _ in range(self.lim.workers)]
        threads.append(threading.Thread(target=self.flooder,
                                        args=(random.Random(self.master.random()), first_flood)))
        threads.append(threading.Thread(target=self.reloader,
                                        args=(random.Random(self.master.random()), first_reload)))
        for t in threads:
            t.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.1)
        self.stop.set()
        join_by = time.monotonic() + self.lim.serve + IDLE + self.lim.reload + 10
        for t in threads:
            t.join(timeout=max(0.1, join_by - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        assert stuck == 0, f"{stuck} client thread(s) still running after the phase"
        assert self.alive(), f"the daemon died (exit {self.proc.returncode}):\n{self.log_tail()}"
        # Back to the base configuration, so the listeners match the baseline.
        self.valid = {"extra": False, "extra6": False, "level": "notice",
                      "max_events": 1024, "backlog": 4096}
        self.reload(self.render(self.valid), True, "back to base")

    def stable_fds(self):
        """The descriptor count once it has not changed for 0.5 s (bounded)."""
        deadline = time.monotonic() + self.lim.settle
        last, since = len(proc_fds(self.proc.pid)), time.monotonic()
        while time.monotonic() - since < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
            n = len(proc_fds(self.proc.pid))
            if n != last:
                last, since = n, time.monotonic()
        return last

    def settle_fds(self, want):
        """Polls the daemon's descriptor count until it is WANT; returns the last count."""
        deadline = time.monotonic() + self.lim.settle
        while True:
            n = len(proc_fds(self.proc.pid))
            if n == want or time.monotonic() >= deadline:
                return n
            time.sleep(0.05)

    # --- the probe ----------------------------------------------------------

    def start_probe(self):
        self.probe = subprocess.Popen(
            [sys.executable, str(HERE / "soakhelpers.py"), "probe", HOST, str(self.port),
             str(self.lim.probe_interval), str(self.lim.probe_timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.probe.stdout.readline()  # bounded: the probe connects or fails
        assert line.strip() == "connected", f"probe did not connect: {line!r}"

    def stop_probe(self):
        out, _ = self.probe.communicate("stop\n", timeout=self.lim.probe_timeout + 10)
        return json.loads(out.strip().splitlines()[-1])

    def cleanup(self):
        for p in (self.probe, self.proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        self.busy.close()


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def test_soak(epolld, tmp_path, capsys):
    seed = int(os.environ.get("EPOLLD_SOAK_SEED") or random.SystemRandom().randrange(1 << 32))
    raise_nofile()
    soak = Soak(tmp_path, seed, epolld)
    mode = "valgrind" if VALGRIND else "ASan" if soak.asan else "plain"
    with capsys.disabled():
        print(f"\nsoak: seed {seed} (EPOLLD_SOAK_SEED={seed} to repeat), {SECONDS:g} s, "
              f"{mode} daemon {BIN}", flush=True)
    try:
        soak.t0 = time.monotonic()
        soak.start()
        soak.start_probe()
        fd_before = soak.stable_fds()

        soak.phase(soak.lim.warmup, first_flood=0.2, first_reload=0.3)
        fd_warm = soak.settle_fds(fd_before)
        assert fd_warm == fd_before, \
            f"descriptors after the warm-up: {fd_warm}, before: {fd_before}"
        assert not soak.problems, "warm-up:\n" + "\n".join(soak.problems[:20])
        rss_before = proc_status(soak.proc.pid, "VmRSS")
        soak.stats.clear()
        soak.flood_waits.clear()

        soak.phase(SECONDS, first_flood=1.0, first_reload=0.5)
        fd_after = soak.settle_fds(fd_before)
        rss_after = proc_status(soak.proc.pid, "VmRSS")
        alive = soak.alive()
        probe = soak.stop_probe()

        soak.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        try:
            rc = soak.proc.wait(timeout=soak.lim.stop + 30)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t
        log = soak.log.read_text(errors="replace")
        lat = probe["latencies_ms"]
        p50, p99 = sh.percentile(lat, 50), sh.percentile(lat, 99)
        stopping = re.findall(r"stopping: .*", log)
        behaviours = {k: v for k, v in sorted(soak.stats.items())
                      if k not in ("connections", "flood_connections")}
        with capsys.disabled():
            print(f"soak: {soak.stats['connections']} connections "
                  f"({soak.stats['flood_connections']} in floods; answered after "
                  f"max {max(soak.flood_waits, default=0):.2f} s)\n"
                  f"soak: behaviours {behaviours}\n"
                  f"soak: fds {fd_before} before, {fd_after} after; RSS {rss_before} KiB after "
                  f"warm-up, {rss_after} KiB after ({rss_after - rss_before:+d} KiB)\n"
                  f"soak: probe {len(lat)} answers of {probe['asked']}: p50 {p50:.2f} ms, "
                  f"p99 {p99:.2f} ms, max {max(lat, default=0):.2f} ms\n"
                  f"soak: SIGTERM -> exit {rc} in {took:.2f} s; daemon: "
                  f"{stopping[-1] if stopping else '(no stopping line)'}", flush=True)

        problems = soak.problems + [f"probe: {f}" for f in probe["failures"]]
        assert not problems, f"seed {seed}:\n" + "\n".join(problems[:30])
        assert alive, f"daemon died:\n{soak.log_tail()}"
        assert fd_after == fd_before, f"descriptors: {fd_before} before, {fd_after} after"
        assert rss_after <= rss_before + soak.lim.rss_margin_kib, \
            f"RSS grew from {rss_before} to {rss_after} KiB"
        assert lat and p99 <= soak.lim.probe_p99_ms, f"probe p99 {p99:.2f} ms"
        assert not SANITIZER_REPORT.search(log), f"sanitizer report:\n{soak.log_tail(60)}"
        if VALGRIND:
            vg = soak.vglog.read_text(errors="replace")
            assert rc == 0, f"valgrind exit {rc}:\n" + "\n".join(vg.splitlines()[-40:])
        assert rc == 0, f"exit status {rc} after SIGTERM:\n{soak.log_tail()}"
        assert took <= soak.lim.stop, f"SIGTERM took {took:.2f} s"
    finally:
        soak.cleanup()
