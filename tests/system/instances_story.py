"""Instances on one port under a booted systemd (issue 12), for boot_test.py.

Three epolld@N.socket units share 127.0.0.1:8001 through ReusePort=yes;
each starts its own epolld@N.service. The steps, in order: start them (the
plain epolld.socket then fails to start: mixing is refused), 3,000
connections spread over all three, 300 held through `systemctl restart
epolld@2` (none closed, the others' PIDs unchanged), `kill -9` of one
instance while a client connects in a loop (no new connection fails), a
reload of all, the journal telling the instances apart, and the security
rating of the template. The last step stops them all again. (`systemctl
reload 'epolld@*'` fails with status 3: the pattern names the sockets too,
which cannot reload; 'epolld@*.service' is what works.)
"""

import json
import re
import time

from clients import Pool, sockets_in
from container import StepFailed, recv_reply, wait_for

PORT = 8001
N = 3
UNITS = [f"epolld@{i}" for i in range(1, N + 1)]
MAX_EXPOSURE = 1.0


class Instances:
    def __init__(self, story):
        self.story = story
        self.ct = story.ct
        self.held = None

    def pid(self, unit):
        return int(self.story.show(f"{unit}.service", "MainPID")["MainPID"])

    def pids(self):
        return {u: self.pid(u) for u in UNITS}

    def replies(self, unit):
        text = self.story.show(f"{unit}.service", "StatusText")["StatusText"]
        m = re.match(r"(\d+) connections, (\d+) replies", text)
        return int(m.group(2)) if m else 0

    def journal(self, cursor_usec, *matches):
        out = self.ct.guest(["journalctl", "--unit=epolld@*", "--output=json", "--no-pager",
                             "--quiet", *matches], check=False).stdout
        entries = []
        for line in out.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if int(e.get("__REALTIME_TIMESTAMP", 0)) > cursor_usec:
                entries.append(e)
        return entries

    def now_usec(self):
        return int(self.ct.guest(["date", "+%s%6N"]).stdout.strip())

    # --- steps -----------------------------------------------------------

    def start(self):
        st = self.story
        st.systemctl("stop", "epolld.socket", "epolld.service", check=False)
        st.systemctl("start", *(f"{u}.socket" for u in UNITS))
        for u in UNITS:
            state = st.show(f"{u}.socket", "ActiveState")["ActiveState"]
            if state != "active":
                raise StepFailed(f"{u}.socket is {state}")
        mixed = st.systemctl("start", "epolld.socket", check=False)
        state = st.show("epolld.socket", "ActiveState")["ActiveState"]
        st.systemctl("reset-failed", "epolld.socket", check=False)
        if mixed.returncode == 0 or state == "active":
            raise StepFailed(f"epolld.socket started beside the instances ({state})")
        return (f"{', '.join(u + '.socket' for u in UNITS)} listen on {PORT}; "
                f"epolld.socket refused to join them ({state})")

    def spread(self):
        total = 3000
        for _ in range(total // 1000):
            pool = Pool(self.ct.leader, PORT)
            try:
                idxs = pool.open(1000)
                pool.exchange(idxs)
            finally:
                pool.close_all()
        # STATUS= is rate-limited to one a second.
        counts = wait_for("every reply in STATUS=",
                          lambda: (lambda c: c if sum(c.values()) == total else None)(
                              {u: self.replies(u) for u in UNITS}), 15)
        low = {u: c for u, c in counts.items() if c < total * 0.2}
        if low:
            raise StepFailed(f"under 20% of {total}: {low} (all: {counts})")
        return f"{total} connections answered: " + ", ".join(f"{u} {c}" for u, c in
                                                             counts.items())

    def restart_one(self):
        pool = Pool(self.ct.leader, PORT)
        self.held = pool
        idxs = pool.open(300)
        pool.exchange(idxs)
        before = self.pids()
        started = time.monotonic()
        self.story.systemctl("restart", "epolld@2.service", timeout=60)
        took = time.monotonic() - started
        after = self.pids()
        if after["epolld@2"] == before["epolld@2"]:
            raise StepFailed("epolld@2's PID did not change")
        moved = [u for u in ("epolld@1", "epolld@3") if after[u] != before[u]]
        if moved:
            raise StepFailed(f"restarting epolld@2 changed the PID of {moved}")
        closed = pool.closed()
        if closed:
            raise StepFailed(f"{len(closed)} of 300 held connections closed")
        pool.exchange(idxs)
        return f"300 held through restart of epolld@2 ({took:.2f}s), all answered, " \
               f"none closed; PIDs of epolld@1/3 unchanged"

    def kill_one(self):
        """kill -9 of epolld@3 while connecting in a loop: systemd still
        listens on its socket, so new clients wait there for the restart."""
        old = self.pid("epolld@3")
        socks = sockets_in(self.ct.leader, 3000)
        failures, done, restarted_at = [], 0, None
        killer = self.ct.guest_background(["systemctl", "kill", "-s", "KILL",
                                           "--kill-whom=main", "epolld@3.service"])
        try:
            for s in socks:
                try:
                    s.settimeout(5)
                    s.connect(("127.0.0.1", PORT))
                    s.sendall(b"x")
                    got = recv_reply(s)
                    if got != b"Hi!":
                        failures.append(got)
                except OSError as e:
                    failures.append(str(e))
                finally:
                    s.close()
                done += 1
                if done % 50 == 0 and restarted_at is None:
                    pid = self.pid("epolld@3")
                    if pid not in (0, old):
                        restarted_at = done
                if restarted_at is not None and done >= restarted_at + 200:
                    break
        finally:
            for s in socks:
                s.close()
            killer.communicate(timeout=30)
        if restarted_at is None:
            raise StepFailed(f"epolld@3 not restarted after {done} connections")
        if failures:
            raise StepFailed(f"{len(failures)} of {done} connections failed: {failures[:3]}")
        lost = len(self.held.closed()) if self.held else 0
        return (f"{done} connections while epolld@3 was killed and restarted, 0 failed; "
                f"{lost} of the 300 held ones (epolld@3's own) were closed")

    def reload_all(self):
        since = self.now_usec()
        pids = self.pids()
        # 'epolld@*' would name the sockets too, which cannot reload (rc 3).
        self.story.systemctl("reload", "epolld@*.service")

        def reloaded():
            got = {e.get("EPOLLD_INSTANCE") for e in self.journal(since)
                   if "reloaded configuration" in str(e.get("MESSAGE"))}
            return got if got >= {str(i) for i in range(1, N + 1)} else None
        got = wait_for("a reload line from every instance", reloaded, 15)
        if self.pids() != pids:
            raise StepFailed("a reload changed a PID")
        return f"systemctl reload 'epolld@*.service': reloaded by instances {sorted(got)}"

    def journal_apart(self):
        entries = self.journal(0, "EPOLLD_EVENT=accept")
        seen = {}
        for e in entries:
            inst = e.get("EPOLLD_INSTANCE")
            unit, ident = e.get("_SYSTEMD_UNIT"), e.get("SYSLOG_IDENTIFIER")
            if unit != f"epolld@{inst}.service" or ident != f"epolld@{inst}":
                raise StepFailed(f"entry of {unit} says instance {inst}, identifier {ident}")
            seen.setdefault(inst, set()).add(e.get("CONNECTION_ID"))
        if set(seen) != {str(i) for i in range(1, N + 1)}:
            raise StepFailed(f"accept entries only from instances {sorted(seen)}")
        shared = set.intersection(*seen.values())
        return (f"accept entries of instances {sorted(seen)}, each tagged "
                f"EPOLLD_INSTANCE and SYSLOG_IDENTIFIER=epolld@N; "
                f"{len(shared)} connection ids occur in all three, told apart by them")

    def security(self):
        out = self.ct.guest(["systemd-analyze", "security", "--no-pager",
                             "epolld@1.service"], check=False).stdout
        m = re.search(r"Overall exposure level for epolld@1\.service: (\d+\.\d+)", out)
        if not m or float(m.group(1)) > MAX_EXPOSURE:
            raise StepFailed(f"exposure: {m.group(1) if m else out}")
        return f"epolld@1.service exposure {m.group(1)} <= {MAX_EXPOSURE}"

    def stop_all(self):
        if self.held:
            self.held.close_all()
        self.story.systemctl("stop", *(f"{u}.socket" for u in UNITS),
                             *(f"{u}.service" for u in UNITS))
        return "stopped"

    def steps(self):
        return [("instances-start", self.start),
                ("instances-spread", self.spread),
                ("instances-restart-one", self.restart_one),
                ("instances-kill-one", self.kill_one),
                ("instances-reload", self.reload_all),
                ("instances-journal", self.journal_apart),
                ("instances-security", self.security),
                ("instances-stop", self.stop_all)]
