"""Descriptor shortage on accept (EMFILE): the daemon logs it once, takes its
listeners out of the loop and retries every 100 ms instead of spinning,
keeps serving the connections it has, and accepts the waiting clients once
descriptors free up.

The daemon sizes max_connections to its RLIMIT_NOFILE at start, so the
test lowers the limit of the running daemon from outside (prlimit, as
root) to just above the descriptors it holds, as libuv's test-emfile does.
"""
import resource
import time

from helpers import REPLY, exchange, proc_fds, recv_exact, recv_for

RETRY_S = 0.1
CPU_WINDOW_S = 2.0
CPU_MAX_S = 0.2


def limit_leaving(fds, room):
    """The lowest limit under which ROOM descriptor numbers are still free."""
    taken, limit = set(fds), 0
    while limit - len([fd for fd in taken if fd < limit]) < room:
        limit += 1
    return limit


def test_accept_under_descriptor_shortage(epolld):
    d = epolld()
    held = [d.connect() for _ in range(3)]
    fresh, waiting = [], []
    try:
        for s in held:
            assert exchange(s) == REPLY
        room = 4
        limit = limit_leaving(proc_fds(d.pid), room)
        # Lowered for good: raising a hard limit again is not allowed here.
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (limit, limit))

        t_connect = time.monotonic()
        fresh = [d.connect() for _ in range(room)]
        waiting = [d.connect() for _ in range(4)]  # handshakes complete in the backlog
        for s in fresh + waiting:
            s.sendall(b"hello")
        for i, s in enumerate(fresh):
            assert recv_exact(s, 3) == REPLY, f"client {i} of those that fit"
        warning = (rf"^warning: accept on 127\.0\.0\.1:{d.port} failed: Too many open files; "
                   rf"pausing accepts, retrying every 100 ms$")
        d.wait_log(warning)

        # While the clients wait, the daemon must sleep, not spin.
        cpu_before = d.cpu_seconds()
        time.sleep(CPU_WINDOW_S)  # a measuring window, not a wait for a condition
        cpu = d.cpu_seconds() - cpu_before
        print(f"daemon CPU time over {CPU_WINDOW_S} s of EMFILE: {cpu:.3f} s")
        assert cpu < CPU_MAX_S, f"the daemon used {cpu:.2f} s of CPU in {CPU_WINDOW_S} s"

        for i, s in enumerate(waiting):
            assert recv_for(s, 0.05 if i else 0.3) == b"", "a client was served beyond the limit"
        for s in held + fresh:
            assert exchange(s) == REPLY, "an existing client was not served"
        assert d.count_log(warning) == 1, d.tail()
        assert d.proc.poll() is None

        # Descriptors free up: the waiting clients get in at the next retry.
        # One more than they need, so the episode really ends: accept4()
        # takes a descriptor before it looks at the backlog, and at the
        # limit it fails with EMFILE even when no client is waiting.
        t_close = time.monotonic()
        for s in fresh + held[:1]:
            s.close()
        fresh, held = [], held[1:]
        for i, s in enumerate(waiting):
            assert recv_exact(s, 3, timeout=2.0) == REPLY, f"waiting client {i}"
        t_served = time.monotonic()
        print(f"waiting clients served {t_served - t_close:.2f} s after the close")
    finally:
        for s in held + fresh + waiting:
            s.close()

    m = d.wait_log(r"^notice: accepting again after (\d+) failed attempts$")
    attempts = int(m[1])
    episode = t_served - t_connect
    print(f"{attempts} failed accept attempts in an episode of at most {episode:.2f} s")
    # One attempt per retry, every 100 ms: not a tight loop, and not given up.
    assert CPU_WINDOW_S / RETRY_S / 2 <= attempts <= episode / RETRY_S + 2
    assert d.count_log(warning) == 1

    with d.connect() as s:
        assert exchange(s) == REPLY
