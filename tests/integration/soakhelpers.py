"""soakhelpers.py - the pieces of test_soak.py that are not the scenario:
the daemon's process figures (/proc), a fake NOTIFY_SOCKET that records
what sd_notify sends, percentiles, and the probe.

The probe runs as its own process (`python3 soakhelpers.py probe HOST
PORT ...`) so that its latencies measure the daemon, not the test's GIL
shared with dozens of chaotic client threads. It connects once, says
"connected", then asks (send one byte, wait for "Hi!") every INTERVAL
seconds until a line arrives on its stdin, and prints its figures as JSON.

Every wait is bounded.
"""
import json
import os
import select
import socket
import sys
import threading
import time

REPLY = b"Hi!"


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def is_asan_build(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def percentile(values, p):
    """The nearest-rank percentile P (0..100) of VALUES; 0.0 if empty."""
    if not values:
        return 0.0
    ranked = sorted(values)
    k = max(0, min(len(ranked) - 1, int(round(p / 100.0 * len(ranked) + 0.5)) - 1))
    return ranked[k]


class Notify:
    """A NOTIFY_SOCKET that records every datagram, drained by a thread so
    that sd_notify in the daemon never waits on us."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cond:
                self.messages.append(data.decode(errors="replace"))
                self.cond.notify_all()

    def count(self, prefix):
        with self.cond:
            return sum(1 for m in self.messages if m.startswith(prefix))

    def wait_for(self, prefix, n, timeout):
        """Waits until N messages starting with PREFIX have arrived; returns
        the Nth, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.messages if m.startswith(prefix)]
                if len(found) >= n:
                    return found[n - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


def probe_main(host, port, interval, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("connected", flush=True)
    latencies, failures, asked = [], [], 0
    next_ask = time.monotonic()
    while True:
        wait = max(0.0, next_ask - time.monotonic())
        if select.select([sys.stdin], [], [], wait)[0]:
            break  # a line (or EOF) on stdin: stop
        next_ask = time.monotonic() + interval
        asked += 1
        start = time.perf_counter()
        try:
            s.sendall(b"?")
            got = b""
            while len(got) < len(REPLY):
                chunk = s.recv(len(REPLY) - len(got))
                if not chunk:
                    break
                got += chunk
        except OSError as e:
            failures.append(f"ask #{asked}: {e!r}")
            break
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if got != REPLY:
            failures.append(f"ask #{asked}: got {got!r} after {elapsed_ms:.1f} ms")
            break
        latencies.append(elapsed_ms)
    s.close()
    print(json.dumps({"asked": asked, "latencies_ms": latencies, "failures": failures}),
          flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "probe":
        probe_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit("usage: soakhelpers.py probe HOST PORT INTERVAL TIMEOUT")
