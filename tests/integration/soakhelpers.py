"""soakhelpers.py - the pieces of test_soak.py that are not the scenario
and that no other test needs: percentiles, and the probe.

The probe runs as its own process (`python3 soakhelpers.py probe HOST
PORT ...`) so that its latencies measure the daemon, not the test's GIL
shared with dozens of chaotic client threads. It connects once, says
"connected", then asks (send one byte, wait for "Hi!") every INTERVAL
seconds until a line arrives on its stdin, and prints its figures as JSON.

Every wait is bounded.
"""
import json
import select
import socket
import sys
import time

REPLY = b"Hi!"


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
