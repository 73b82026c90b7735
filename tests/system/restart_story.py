"""Connections kept across `systemctl restart`, for boot_test.py.

The steps of issue 7, run in the same booted container after boot_test's
own. Clients are held from this process (clients.py). What each must
receive is known exactly: a client sends its next message only once the
reply to the previous one is waiting, unread, in its receive queue, so the
daemon reads every message on its own and owes 3 bytes for each; replies
left unread across a restart must then arrive exactly once, no more, no
less. The daemon's own count (REPLIES= of its close entries, carried in
the state file) must agree.

A connection sits in PID 1's fd store, and nowhere else, between the old
process's exit and the new one's start. To act in that window on purpose,
some steps slow the start down with a drop-in (ExecStartPre=sleep).
"""

import contextlib
import re
import resource
import socket
import subprocess
import time

from clients import REPLY, Pool, inq
from container import StepFailed, wait_for

PORT = 8001
SLOW_START_DROPIN = "/run/systemd/system/epolld.service.d/50-systest-slow.conf"
SLOW_START_SEC = 2
# Descriptors this process keeps for itself besides the held clients.
OWN_FDS = 64


class Held:
    def __init__(self, story, timing_connections):
        self.story = story
        self.ct = story.ct
        self.timing_connections = timing_connections
        self.pool = None    # keep-100's clients, for half-close
        self.sent = None    # messages each of them sent
        self.ids = None     # their connection ids
        self.big = None     # keep-1500's clients, for stop-closes-all

    # helpers

    def drop_held(self):
        """Closes what an earlier step (one that failed, say) still holds."""
        for pool in (self.pool, self.big):
            if pool:
                pool.close_all()
        self.pool = self.big = None

    def stored(self):
        return int(self.story.show("epolld.service", "NFileDescriptorStore")
                   ["NFileDescriptorStore"])

    def restart(self, in_window=None, slow=False, timeout=60):
        """systemctl restart, calling IN_WINDOW while it runs: right after
        it began, or with SLOW once the old process is gone and the new one
        not yet started. Returns (old MainPID, new MainPID, seconds, cursor
        before, what IN_WINDOW returned)."""
        st = self.story
        old = st.main_pid()
        cursor = st.cursor()
        with self.slow_start() if slow else contextlib.nullcontext():
            started = time.monotonic()
            proc = self.ct.guest_background(["systemctl", "restart",
                                             "epolld.service"])
            try:
                if slow:
                    self.in_start_pre()
                seen = in_window() if in_window else None
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise StepFailed(f"systemctl restart took more than "
                                 f"{timeout}s")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            took = time.monotonic() - started
        if proc.returncode != 0:
            first = (out.strip().splitlines() or [""])[0]
            raise StepFailed(f"systemctl restart failed after {took:.0f}s: "
                             f"{first}; {self.unit_log(cursor)}")
        st.expect_running()
        new = st.main_pid()
        if new in (0, old):
            raise StepFailed(f"MainPID {old} -> {new} after restart")
        return old, new, took, cursor, seen

    def unit_log(self, cursor, lines=12):
        """The unit's journal after CURSOR: distinct messages, without the
        per-connection ones, up to LINES from the end."""
        msgs = []
        for m in self.story.messages(cursor):
            if m and m not in msgs and not re.match(
                    r"(accepted|adopted|closed) connection #", m):
                msgs.append(m)
        return "journal: " + " | ".join(msgs[-lines:])

    def expect_handover(self, cursor, n):
        """The old process handed N connections over, the new adopted N."""
        st = self.story
        handed = st.wait_message(cursor, r"handed \d+ connection\(s\)")
        adopted = st.wait_message(cursor, r"adopted \d+ of \d+ inherited")
        if f"handed {n} " not in handed["MESSAGE"] or \
                f"adopted {n} of {n} " not in adopted["MESSAGE"]:
            raise StepFailed(f"{n} held: {handed['MESSAGE']!r}, "
                             f"{adopted['MESSAGE']!r}")

    def expect_open(self, pool, idxs, when):
        closed = pool.closed(idxs)
        if closed:
            raise StepFailed(f"{len(closed)} of {len(idxs)} clients saw a "
                             f"close {when} (clients {closed[:10]})")

    def expect_store_empty(self, when):
        """With socket activation nothing of ours stays in the fd store:
        the new process took conn and state out (FDSTOREREMOVE=1)."""
        n = self.stored()
        if n != 0:
            raise StepFailed(f"{n} fd(s) left in the fd store {when}")

    @staticmethod
    def wait_queued(pool, want, timeout=10):
        """Until client i has WANT[i] bytes waiting unread."""
        def arrived():
            return all(inq(pool.socks[i]) >= n for i, n in want.items())
        try:
            wait_for("replies in the clients' receive queues", arrived,
                     timeout, interval=0.01)
        except StepFailed:
            short = {i: (inq(pool.socks[i]), n) for i, n in want.items()
                     if inq(pool.socks[i]) < n}
            raise StepFailed(f"{len(short)} clients short of their replies "
                             f"after {timeout}s (client: (queued, owed)): "
                             f"{dict(list(short.items())[:5])}")

    def send_unread(self, pool, counts, sent):
        """Client i sends COUNTS[i] messages, each once the reply to the
        one before is queued; none of the replies is read."""
        for k in range(max(counts.values())):
            now = [i for i, n in counts.items() if n > k]
            pool.send(now)
            for i in now:
                sent[i] += 1
            self.wait_queued(pool, {i: 3 * sent[i] - pool.received[i]
                                    for i in now})

    def read_owed(self, pool, sent):
        """Each client reads what it is owed: exactly b'Hi!' per message."""
        want = {i: 3 * n for i, n in sent.items()}
        got = pool.read(list(sent), want, 15)
        bad = {i: f"{pool.received[i]} of {want[i]} bytes"
               for i in sent if pool.received[i] != want[i] or
               bytes(got[i]) != REPLY * (len(got[i]) // 3)}
        bad.update({i: f"{len(b)} bytes more: {b[:12]!r}"
                    for i, b in pool.extra(list(sent)).items()})
        if bad:
            raise StepFailed(f"{len(bad)} of {len(sent)} clients did not get "
                             f"exactly 3 bytes per message: "
                             f"{dict(list(bad.items())[:5])}")
        return sum(len(b) for b in got.values())

    def connection_ids(self, cursor, pool, idxs):
        """{client: CONNECTION_ID} from the daemon's accept entries."""
        ports = {pool.socks[i].getsockname()[1]: i for i in idxs}
        found = {}

        def all_found():
            for e in self.story.journal(cursor, "EPOLLD_EVENT=accept"):
                port = int(e.get("REMOTE_PORT", 0))
                if port in ports:
                    found[ports[port]] = e["CONNECTION_ID"]
            return len(found) == len(idxs)
        wait_for(f"accept entries of {len(idxs)} clients", all_found, 10)
        return found

    def replies_logged(self, cursor, ids):
        """{CONNECTION_ID: (REPLIES, message)} of the close entries."""
        want = set(ids)
        found = {}

        def all_found():
            for e in self.story.journal(cursor, "EPOLLD_EVENT=close"):
                if e.get("CONNECTION_ID") in want:
                    found[e["CONNECTION_ID"]] = (int(e["REPLIES"]),
                                                 e["MESSAGE"])
            return len(found) == len(want)
        wait_for(f"close entries of {len(want)} connections", all_found, 10)
        return found

    @contextlib.contextmanager
    def slow_start(self):
        """Starts of epolld.service wait SLOW_START_SEC in ExecStartPre=."""
        self.ct.write_file(SLOW_START_DROPIN,
                           f"[Service]\nExecStartPre=sleep {SLOW_START_SEC}\n")
        self.story.systemctl("daemon-reload")
        try:
            yield
        finally:
            self.ct.guest(["rm", "-f", SLOW_START_DROPIN], check=False)
            self.story.systemctl("daemon-reload", check=False)

    def in_start_pre(self, timeout=30):
        """Waits until the old process is gone and the new one not yet
        started: the unit sits in ExecStartPre=."""
        wait_for("epolld.service in start-pre", lambda: self.story.show(
            "epolld.service", "SubState")["SubState"] == "start-pre", timeout,
            interval=0.05)

    @staticmethod
    def read_to_eof(sock, timeout=5):
        """(bytes, seconds) until the peer's FIN; fails on RST or time."""
        sock.settimeout(timeout)
        started = time.monotonic()
        data = b""
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    return data, time.monotonic() - started
                data += chunk
        except socket.timeout:
            raise StepFailed(f"no EOF within {timeout}s (got {data!r})")
        except ConnectionResetError:
            raise StepFailed(f"reset instead of EOF (got {data!r} first)")

    @staticmethod
    def eof_or_reset(pool, idxs):
        """(how many saw EOF, how many saw RST or another error)."""
        eof = reset = 0
        for i in idxs:
            try:
                eof += pool.socks[i].recv(16) == b""
            except BlockingIOError:
                pass
            except OSError:
                reset += 1
        return eof, reset

    # steps

    def keep_100(self):
        """100 clients, replies left unread, kept through two restarts."""
        st = self.story
        self.drop_held()
        st.reset()
        st.systemctl("start", "epolld.socket")
        cursor = st.cursor()
        pool = self.pool = Pool(self.ct.leader, PORT)
        idxs = pool.open(100)
        self.ids = self.connection_ids(cursor, pool, idxs)
        sent = self.sent = {i: 0 for i in idxs}
        # Client i has 1 + i % 4 replies waiting unread at the first restart.
        self.send_unread(pool, {i: 1 + i % 4 for i in idxs}, sent)
        unread = sum(sent.values())
        pids = [st.main_pid()]
        took = []
        for n in (1, 2):
            # 20 clients send during the restart: at the first while only
            # PID 1 holds their sockets, at the second as it begins, read by
            # whichever process. Each message must be answered, once.
            during = idxs[20 * n:20 * n + 20]
            _, new, secs, c, _ = self.restart(
                lambda: pool.send(during), slow=n == 1)
            for i in during:
                sent[i] += 1
            pids.append(new)
            took.append(f"{secs:.1f}s")
            self.expect_handover(c, 100)
            self.expect_open(pool, idxs, f"at restart {n}")
            self.expect_store_empty(f"after restart {n}")
            self.wait_queued(pool, {i: 3 * sent[i] - pool.received[i]
                                    for i in during})
        got = self.read_owed(pool, sent)
        pool.exchange(idxs)
        for i in idxs:
            sent[i] += 1
        self.expect_open(pool, idxs, "after the restarts")
        # The daemon's count, carried through both restarts, agrees. Two
        # clients stay for half-close.
        cursor = st.cursor()
        rest = idxs[2:]
        pool.close(rest)
        logged = self.replies_logged(cursor, [self.ids[i] for i in rest])
        wrong = {i: (logged[self.ids[i]][0], sent[i]) for i in rest
                 if logged[self.ids[i]][0] != sent[i]}
        if wrong:
            raise StepFailed(f"close entries' REPLIES differ from the "
                             f"messages sent (client: (REPLIES, sent)): "
                             f"{dict(list(wrong.items())[:5])}")
        return (f"MainPID {pids[0]} -> {pids[1]} -> {pids[2]} "
                f"(restarts {', '.join(took)}, the first with "
                f"ExecStartPre=sleep {SLOW_START_SEC}); {unread} replies "
                f"unread at "
                f"the first restart, 20 messages sent while in the fd store "
                f"and 20 as the second began: "
                f"every client then read exactly 3 bytes per message "
                f"({got} bytes), none saw a close, all 100 answered a new "
                f"message; fd store empty after each restart; REPLIES= of "
                f"the 98 closes match the messages sent")

    def half_close(self):
        """Half-closed after adoption, and half-closed while stored: each
        gets its b'Hi!' and then EOF; PID 1 keeps no copy of either."""
        st = self.story
        pool, sent, ids = self.pool, self.sent, self.ids
        a, b = 0, 1
        cursor = st.cursor()
        pool.socks[a].send(b"bye\n")
        pool.socks[a].shutdown(socket.SHUT_WR)
        got_a, secs_a = self.read_to_eof(pool.socks[a])

        def half_close_b():
            # Only PID 1 holds b's socket now.
            pool.socks[b].send(b"bye\n")
            pool.socks[b].shutdown(socket.SHUT_WR)
        self.restart(half_close_b, slow=True)
        got_b, secs_b = self.read_to_eof(pool.socks[b])
        for name, got in (("adopted", got_a), ("stored", got_b)):
            if got != REPLY:
                raise StepFailed(f"{name} client got {got!r} before EOF, "
                                 f"expected b'Hi!'")
        logged = self.replies_logged(cursor, [ids[a], ids[b]])
        for i in (a, b):
            replies, msg = logged[ids[i]]
            if replies != sent[i] + 1 or "closed by peer" not in msg:
                raise StepFailed(f"close entry {msg!r}: REPLIES={replies}, "
                                 f"expected {sent[i] + 1}")
        self.expect_store_empty("after the half-closes")
        self.drop_held()
        return (f"adopted then half-closed: b'Hi!' and EOF after "
                f"{secs_a:.2f}s; half-closed while in the fd store: b'Hi!' "
                f"and EOF {secs_b:.2f}s after the restart; "
                f"{logged[ids[a]][1]!r}, {logged[ids[b]][1]!r}")

    def keep_1500(self):
        """More held connections than 1024, kept through two restarts."""
        st = self.story
        self.drop_held()
        st.reset()
        st.systemctl("start", "epolld.socket")
        pool = self.big = Pool(self.ct.leader, PORT)
        idxs = pool.open(1500)
        pool.exchange(idxs)
        sent = {i: 1 for i in idxs}
        self.send_unread(pool, {i: 1 for i in idxs[::3]}, sent)
        pids = [st.main_pid()]
        took = []
        for n in (1, 2):
            _, new, secs, c, _ = self.restart(timeout=120)
            pids.append(new)
            took.append(f"{secs:.1f}s")
            self.expect_handover(c, 1500)
            self.expect_open(pool, idxs, f"at restart {n}")
            self.expect_store_empty(f"after restart {n}")
        self.read_owed(pool, sent)
        pool.exchange(idxs)
        self.expect_open(pool, idxs, "after the restarts")
        return (f"MainPID {pids[0]} -> {pids[1]} -> {pids[2]} (restarts "
                f"{', '.join(took)}); 'handed 1500', 'adopted 1500 of 1500' "
                f"each time; the 500 unread replies arrived exactly once, "
                f"none saw a close, all 1500 answered a new message")

    def stop_closes_all(self):
        """A stop closes every held connection; the next start inherits
        nothing."""
        st = self.story
        pool = self.big
        idxs = list(range(len(pool)))
        # The old process hands every connection to PID 1 at a stop too (it
        # cannot tell a stop from a restart), so the clients are closed once
        # PID 1 has stored them all: time both.
        started = time.monotonic()
        st.systemctl("stop", "epolld.socket", "epolld.service", timeout=120)
        stopped = time.monotonic()
        pool.wait_closed(idxs, 5)
        secs = time.monotonic() - started
        after = time.monotonic() - stopped
        eof, reset = self.eof_or_reset(pool, idxs)
        stored = self.stored()
        self.drop_held()
        if reset or eof != len(idxs):
            raise StepFailed(f"of {len(idxs)} clients {eof} saw EOF and "
                             f"{reset} a reset")
        if stored:
            raise StepFailed(f"{stored} fd(s) in the store after stop")
        cursor = st.cursor()
        st.systemctl("start", "epolld.socket")
        pool.open(1)
        pool.exchange([0])
        st.wait_message(cursor, r"started: ")
        inherited = [m for m in st.messages(cursor)
                     if re.search(r"adopt|inherit|state", m or "")]
        pool.close_all()
        st.reset()
        if inherited:
            raise StepFailed(f"a new start inherited: {inherited[:3]}")
        return (f"all {len(idxs)} held clients saw EOF {secs:.1f}s after "
                f"`systemctl stop epolld.socket epolld` began ({after:.1f}s "
                f"after it returned); "
                f"NFileDescriptorStore=0; the next start adopted nothing")

    def standalone_backlog(self):
        """Without the socket unit, the listener waits in the fd store
        during a restart: a client connecting then is served after it."""
        st = self.story
        self.drop_held()
        st.reset()
        cursor = st.cursor()
        st.systemctl("start", "epolld.service", timeout=40)
        st.wait_message(cursor, rf"listening on 127\.0\.0\.1:{PORT}")
        pool = Pool(self.ct.leader, PORT)
        try:
            held = pool.open(50)
            pool.exchange(held)
            stored = self.stored()
            if stored != 1:
                raise StepFailed(f"{stored} fds stored; expected 1, the "
                                 f"listener")

            def connect_late():
                late = pool.open(5, timeout=5)
                pool.send(late)
                time.sleep(0.5)
                return late, [i for i in late if inq(pool.socks[i])]
            old, new, _, cursor, (late, early) = self.restart(
                connect_late, slow=True)
            if early:
                raise StepFailed(f"{len(early)} clients answered while no "
                                 f"process ran")
            self.read_owed(pool, {i: 1 for i in late})
            pool.exchange(held + late)
            self.expect_open(pool, held + late, "at the restart")
            msgs = st.messages(cursor)
            rebound = [m for m in msgs if m.startswith("listening on")]
            if rebound:
                raise StepFailed(f"the new process bound again: {rebound}")
            self.expect_handover(cursor, 50)
            stored = self.stored()
            if stored != 1:
                raise StepFailed(f"{stored} fds stored after the restart; "
                                 f"expected 1, the listener")
            # A stop closes the held clients and empties the store: the
            # next start binds afresh and adopts nothing.
            cursor = st.cursor()
            st.systemctl("stop", "epolld.service")
            secs = pool.wait_closed(held + late, 5)
            st.systemctl("start", "epolld.service", timeout=40)
            bound = st.wait_message(cursor, rf"listening on 127\.0\.0\.1:"
                                            rf"{PORT}")
            fresh = pool.open(1)
            pool.exchange(fresh)
            inherited = [m for m in st.messages(cursor)
                         if re.search(r"adopt|inherit", m or "")]
            if inherited:
                raise StepFailed(f"the start after stop inherited: "
                                 f"{inherited[:3]}")
        finally:
            pool.close_all()
            st.reset()
        return (f"MainPID {old} -> {new}; 5 clients connected during "
                f"ExecStartPre= (no process) were queued in the stored "
                f"listener's backlog, unanswered until the new process "
                f"answered each with b'Hi!'; the 50 held ones kept; no "
                f"re-bind; {stored} fd stored (the listener); stop: all 55 "
                f"saw a close within {secs:.1f}s; the next start "
                f"{bound['MESSAGE']!r}, adopted nothing")

    def restart_timing(self):
        """How long a restart takes with many connections held.

        As many as fit would be about 19000 here (RLIMIT_NOFILE 20000 for
        the daemon, PID 1 and this process alike), but systemd 252 checks
        each fd given to its store against every fd stored before (kcmp()),
        so storing n costs n*n/2 calls: about 30-50 s for 8000, 90 s for
        12000, 3-5 min for 19000, with PID 1 doing nothing else meanwhile.
        And from about 13000 on, PID 1's child cannot move the stored fds
        to 3..n+2 under that limit: the new process fails with status
        202/FDS and, once Restart= gives up, every connection is closed.
        So the default is 8000; --timing-connections asks for more."""
        st = self.story
        self.drop_held()
        st.reset()
        cursor = st.cursor()
        st.systemctl("start", "epolld.socket")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        pool = Pool(self.ct.leader, PORT)
        try:
            first = pool.open(1)
            pool.exchange(first)
            cap = int(re.search(r"max_connections=(\d+)", st.wait_message(
                cursor, r"started: ")["MESSAGE"]).group(1))
            n = min(self.timing_connections, hard - OWN_FDS, cap)
            idxs = first + pool.open(n - 1, timeout=120)
            pool.exchange(idxs, timeout=60)
            try:
                old, new, _, cursor, _ = self.restart(timeout=480)
            except StepFailed as e:
                time.sleep(5)  # Restart=on-failure may try again meanwhile
                raise StepFailed(f"{n} held: {e}; {len(pool.closed(idxs))} "
                                 f"of {n} clients saw a close")
            phases = self.phases(cursor)
            if len(phases) != 6:
                raise StepFailed(f"journal lines missing: have {phases}")
            closed = len(pool.closed(idxs))
            pool.exchange(idxs, timeout=60)
            if closed:
                raise StepFailed(f"{closed} of {n} saw a close at restart")
            self.expect_store_empty("after the restart")
            # A stop stores them all too before they are closed.
            started = time.monotonic()
            st.systemctl("stop", "epolld.socket", "epolld.service",
                         timeout=60 + 2 * phases["ready"])
            pool.wait_closed(idxs, 10)
            secs = time.monotonic() - started
        finally:
            pool.close_all()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return (f"{n} held (asked {self.timing_connections}; "
                f"RLIMIT_NOFILE {hard}, max_connections {cap}): MainPID "
                f"{old} -> {new}, SIGTERM to READY=1 {phases['ready']:.1f}s "
                f"(hand-over {phases['handed']:.2f}s, PID 1 storing until "
                f"the old unit stopped {phases['stored']:.1f}s, new process "
                f"to READY=1 {phases['start']:.2f}s); all {n} answered, "
                f"0 saw a close; all saw EOF {secs:.1f}s after stop began")

    def phases(self, cursor):
        """Seconds of a restart from the journal's timestamps."""
        marks = {}
        pats = (("sigterm", r"^received SIGTERM, stopping"),
                ("handed", r"^handed \d+ connection"),
                ("stopped", r"^Deactivated successfully|: Deactivated "
                            r"successfully"),
                ("ready", r"^Started epolld\.service"))
        for e in self.story.journal(cursor):
            ts = int(e.get("_SOURCE_REALTIME_TIMESTAMP") or
                     e["__REALTIME_TIMESTAMP"]) / 1e6
            for key, pat in pats:
                if key not in marks and re.search(pat, e.get("MESSAGE") or ""):
                    marks[key] = ts
        if "sigterm" not in marks:
            raise StepFailed("no 'received SIGTERM' line in the journal")
        t0 = marks["sigterm"]
        since = {k: v - t0 for k, v in marks.items()}
        if "handed" in marks and "stopped" in marks:
            since["stored"] = marks["stopped"] - marks["handed"]
        if "stopped" in marks and "ready" in marks:
            since["start"] = marks["ready"] - marks["stopped"]
        return since
