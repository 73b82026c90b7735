#!/usr/bin/python3
"""Drive epolld under a really booted systemd, as an operator would.

Boots Debian 12 with systemd as PID 1 in a systemd-nspawn container
(container.py), installs epolld there from `meson install --destdir`, and
runs the operator's story step by step: socket activation, the journal,
reload (good and broken), stop, standalone start, restart and re-exec
keeping connections, the watchdog, and the security rating; then, in the
same boot, connections held through restarts by the hundred and by the
thousand, half-closes, stops, a restart without the socket unit, and the
time a restart takes with many connections (restart_story.py), and last
three instances sharing the port (instances_story.py). Every step
prints PASS or FAIL with what it saw; the run ends with "N passed, N
failed". Needs root, systemd-nspawn and mmdebstrap; without them it is
skipped (exit 77) unless EPOLLD_REQUIRE_SYSTEM_TEST=1.
"""

import argparse
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time

from container import (Abort, Container, MACHINE, Report, StepFailed, begin,
                       build_and_install, copy_into, exchange, finish, log,
                       prepare_rootfs, run, wait_for)
from instances_story import Instances
from restart_story import Held

PORT = 8001
# A peer outside the units' IP allow list (the test range 198.18.0.0/15).
OUTSIDER = "198.18.7.1"
CONFIG = "/etc/epolld/epolld.ini"
# Measured floor on systemd 252 for a network server without an IP address
# allow list (IPAddressDeny=, 0.2) or RootDirectory= (0.1): 1.1.
MAX_EXPOSURE = 1.0
# The watchdog step's WatchdogSec=, set by a drop-in.
WATCHDOG_SEC = 2
# Connections held through restart-timing's restart. systemd 252 stores
# each one in O(n) (a kcmp() against every stored fd), so the restart
# grows with the square: 8000 take 30-50 s on 2 cores. Past about
# 13000 (of a 20000 RLIMIT_NOFILE) the new process cannot even be spawned
# (status 202/FDS); see restart_story.py. --timing-connections changes it.
TIMING_CONNECTIONS = 8000


# --- What the operator does, and what each step checks --------------------

class Story:
    def __init__(self, ct):
        self.ct = ct
        self.original_config = None

    # helpers

    def systemctl(self, *args, check=True, timeout=30):
        return self.ct.guest(["systemctl", *args], timeout=timeout,
                             check=check)

    def show(self, unit, *props):
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props))
        values = dict(line.split("=", 1)
                      for line in out.stdout.splitlines() if "=" in line)
        return values

    def cursor(self):
        out = self.ct.guest(["journalctl", "--lines=0", "--show-cursor",
                             "--quiet"]).stdout
        m = re.search(r"cursor: (\S+)", out)
        return m.group(1) if m else None

    def journal(self, cursor, *matches):
        """Entries of epolld.service after CURSOR that have all MATCHES."""
        cmd = ["journalctl", "--unit=epolld.service", "--output=json",
               "--no-pager", "--quiet"]
        # journalctl 252 finds nothing for --after-cursor plus field matches
        # when the cursor's entry does not match them; with matches, compare
        # the cursor's realtime stamp instead.
        after = 0
        if cursor and matches:
            after = int(re.search(r"t=([0-9a-f]+)", cursor).group(1), 16)
        elif cursor:
            cmd.append(f"--after-cursor={cursor}")
        out = self.ct.guest(cmd + list(matches), check=False).stdout
        entries = []
        for line in out.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if int(entry.get("__REALTIME_TIMESTAMP", 0)) <= after:
                continue
            msg = entry.get("MESSAGE")
            if isinstance(msg, list):
                entry["MESSAGE"] = bytes(msg).decode(errors="replace")
            entries.append(entry)
        return entries

    def wait_message(self, cursor, pattern, timeout=10, matches=()):
        def find():
            for entry in self.journal(cursor, *matches):
                if re.search(pattern, entry.get("MESSAGE") or ""):
                    return entry
            return None
        return wait_for(f"journal message /{pattern}/", find, timeout)

    def messages(self, cursor):
        return [e.get("MESSAGE") for e in self.journal(cursor)]

    def connect(self, timeout=5):
        s = self.ct.socket()
        s.settimeout(timeout)
        s.connect(("127.0.0.1", PORT))
        return s

    def main_pid(self):
        return int(self.show("epolld.service", "MainPID")["MainPID"])

    def expect_running(self):
        st = self.show("epolld.service", "ActiveState", "SubState")
        if (st["ActiveState"], st["SubState"]) != ("active", "running"):
            raise StepFailed(f"epolld.service is {st}")

    def set_config(self, section, key, value):
        """Set KEY in SECTION of the guest's config; returns its line number."""
        lines = self.ct.read_file(CONFIG).splitlines()
        current = None
        insert_at = None
        for i, line in enumerate(lines):
            s = line.strip()
            m = re.match(r"\[(.+)\]$", s)
            if m:
                current = m.group(1).strip()
                if current == section:
                    insert_at = i + 1
                continue
            if current == section and re.match(
                    rf"[#;]?\s*{re.escape(key)}\s*=", s):
                lines[i] = f"{key} = {value}"
                break
        else:
            if insert_at is None:
                lines += ["", f"[{section}]"]
                insert_at = len(lines)
            lines.insert(insert_at, f"{key} = {value}")
            i = insert_at
        self.ct.write_file(CONFIG, "\n".join(lines) + "\n")
        return i + 1

    def reset(self):
        self.systemctl("stop", "epolld.socket", "epolld.service",
                       check=False)
        self.systemctl("reset-failed", "epolld.service", "epolld.socket",
                       check=False)

    # steps

    def installed(self):
        ldd = self.ct.guest(["ldd", "/usr/sbin/epolld"]).stdout
        if "not found" in ldd:
            raise StepFailed(f"missing libraries:\n{ldd}")
        for unit in ("epolld.service", "epolld.socket"):
            st = self.show(unit, "LoadState", "FragmentPath")
            if st["LoadState"] != "loaded":
                raise StepFailed(f"{unit}: {st}")
        verify = self.ct.guest(["systemd-analyze", "verify", "epolld.service",
                                "epolld.socket"], check=False)
        if verify.returncode != 0 or verify.stdout.strip() \
                or verify.stderr.strip():
            raise StepFailed(f"systemd-analyze verify: "
                             f"{(verify.stdout + verify.stderr).strip()}")
        self.systemctl("enable", "epolld.socket", "epolld.service")
        enabled = self.systemctl("is-enabled", "epolld.socket",
                                 "epolld.service").stdout.split()
        self.original_config = self.ct.read_file(CONFIG)
        return (f"libraries resolve, units loaded from "
                f"{os.path.dirname(st['FragmentPath'])}, verify clean, "
                f"enable: {'/'.join(enabled)}")

    def socket_activation(self):
        self.reset()
        self.start_cursor = self.cursor()
        self.systemctl("start", "epolld.socket")
        before = self.show("epolld.service", "ActiveState")["ActiveState"]
        if before != "inactive":
            raise StepFailed(f"epolld.service {before} before any connection")
        self.client = self.connect()
        self.client_port = self.client.getsockname()[1]
        exchange(self.client)
        active = self.systemctl("is-active", "epolld.service",
                                check=False).stdout.strip()
        if active != "active":
            raise StepFailed(f"is-active epolld.service: {active}")
        pid = self.main_pid()
        status = self.ct.guest(["cat", f"/proc/{pid}/status"]).stdout
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
        nofile = re.search(r"^Max open files\s+(\S+)\s+(\S+)",
                           self.ct.read_file(f"/proc/{pid}/limits"), re.M)
        if uid == "0":
            raise StepFailed("the daemon runs as root")
        return (f"got b'Hi!' from MainPID {pid} (uid {uid}, "
                f"NOFILE {nofile.group(1)}/{nofile.group(2)})")

    def journal_story(self):
        c = self.start_cursor
        start = self.wait_message(
            c, rf"using socket-activated listener 127\.0\.0\.1:{PORT}")
        accept = self.wait_message(
            c, rf"accepted connection #\d+ from 127\.0\.0\.1:{self.client_port}\b")
        fields = wait_for(
            "EPOLLD_EVENT=accept REMOTE_ADDR=127.0.0.1 entry",
            lambda: [e for e in self.journal(
                c, "EPOLLD_EVENT=accept", "REMOTE_ADDR=127.0.0.1")
                if e.get("REMOTE_PORT") == str(self.client_port)], 10)[0]
        conn_id = fields.get("CONNECTION_ID")
        if not conn_id:
            raise StepFailed(f"accept entry has no CONNECTION_ID: {fields}")
        self.client.close()
        closed = wait_for(
            f"EPOLLD_EVENT=close entry for connection #{conn_id}",
            lambda: [e for e in self.journal(c, "EPOLLD_EVENT=close")
                     if e.get("CONNECTION_ID") == conn_id or re.match(
                         rf"closed connection #{conn_id}\b", e["MESSAGE"])],
            10)[0]
        if closed.get("REPLIES") != "1":
            raise StepFailed(f"close entry has REPLIES={closed.get('REPLIES')}"
                             f", the client got one reply: {closed['MESSAGE']!r}")
        return (f"{start['MESSAGE']!r}; {accept['MESSAGE']!r}; field query "
                f"EPOLLD_EVENT=accept REMOTE_ADDR=127.0.0.1 found "
                f"CONNECTION_ID={conn_id}; {closed['MESSAGE']!r} REPLIES=1")

    def reload(self):
        self.expect_running_or_activate()
        pid = self.main_pid()
        self.old = self.connect()
        exchange(self.old)
        c = self.cursor()
        line = self.set_config("server", "idle_timeout", "300")
        self.systemctl("reload", "epolld.service")
        msg = self.wait_message(c, rf"reloaded configuration from {CONFIG}")
        self.wait_ready()
        self.expect_running()
        if self.main_pid() != pid:
            raise StepFailed(f"MainPID changed {pid} -> {self.main_pid()}")
        exchange(self.old)
        return (f"idle_timeout edited (line {line}), {msg['MESSAGE']!r}, "
                f"same MainPID {pid}, old connection still answered")

    def reload_broken(self):
        self.expect_running()
        pid = self.main_pid()
        c = self.cursor()
        line = self.set_config("server", "max_events", "0")
        rc = self.systemctl("reload", "epolld.service", check=False).returncode
        err = self.wait_message(c, rf"epolld\.ini:{line}:")
        self.wait_message(c, r"reload failed, keeping the previous configuration")
        self.wait_ready()
        self.expect_running()
        if self.main_pid() != pid:
            raise StepFailed(f"MainPID changed {pid} -> {self.main_pid()}")
        exchange(self.old)
        # Put the shipped configuration back, and check it loads again.
        c = self.cursor()
        self.ct.write_file(CONFIG, self.original_config)
        self.systemctl("reload", "epolld.service")
        self.wait_message(c, rf"reloaded configuration from {CONFIG}")
        self.wait_ready()
        return (f"max_events = 0 at line {line}: reload rc {rc}, "
                f"{err['MESSAGE']!r}, still running as {pid}; restored")

    def stop(self):
        self.expect_running()
        c = self.cursor()
        self.systemctl("stop", "epolld.service")
        st = self.show("epolld.service", "ActiveState", "Result",
                       "ExecMainCode", "ExecMainStatus")
        self.old.settimeout(5)
        try:
            eof = self.old.recv(16) == b""
        except OSError:
            eof = False
        self.old.close()
        # ExecMainCode 1 is CLD_EXITED: it exited, not killed by SIGTERM.
        if (st["ActiveState"], st["Result"], st["ExecMainCode"],
                st["ExecMainStatus"]) != ("inactive", "success", "1", "0"):
            raise StepFailed(f"after stop: {st}; journal: {self.messages(c)}")
        if not eof:
            raise StepFailed("the open connection was not closed")
        sock = self.systemctl("is-active", "epolld.socket",
                              check=False).stdout.strip()
        return (f"inactive, Result=success, exited with status 0, open "
                f"connection closed, epolld.socket still {sock}")

    def standalone(self):
        """Started alone it binds from the config; a restart keeps its
        listener and connections, and a stop frees the port."""
        self.reset()
        c = self.cursor()
        self.systemctl("start", "epolld.service", timeout=40)
        self.expect_running()
        msg = self.wait_message(c, rf"listening on 127\.0\.0\.1:{PORT}")
        s = self.connect()
        exchange(s)
        stored = self.show("epolld.service",
                           "NFileDescriptorStore")["NFileDescriptorStore"]
        self.systemctl("restart", "epolld.service", timeout=40)
        self.expect_running()
        exchange(s)
        s.close()
        self.systemctl("stop", "epolld.service")
        result = self.show("epolld.service", "Result")["Result"]
        if result != "success":
            raise StepFailed(f"stop of standalone service: Result={result}")
        try:
            self.connect().close()
        except ConnectionRefusedError:
            pass
        else:
            raise StepFailed(f"port {PORT} still accepts after stop")
        return (f"started without the socket: {msg['MESSAGE']!r}, got b'Hi!'; "
                f"{stored} fd(s) in the store; restart kept the connection; "
                f"port free after stop")

    def restart(self):
        """systemctl restart keeps open connections (through the fd store)."""
        self.reset()
        self.systemctl("start", "epolld.socket")
        s = self.connect()
        exchange(s)
        pid = self.main_pid()
        c = self.cursor()
        self.systemctl("restart", "epolld.service", timeout=40)
        self.expect_running()
        new = self.main_pid()
        if new == pid:
            raise StepFailed(f"MainPID {pid} unchanged after restart")
        handed = self.wait_message(c, r"handed \d+ connection\(s\) to the "
                                      r"service manager's fd store")
        adopted = self.wait_message(c, r"adopted \d+ of \d+ inherited "
                                       r"connection")
        exchange(s)
        stored = self.show("epolld.service",
                           "NFileDescriptorStore")["NFileDescriptorStore"]
        # A stop (not a restart) must not keep them: PID 1 closes the store.
        self.systemctl("stop", "epolld.service")
        s.settimeout(5)
        try:
            eof = s.recv(16) == b""
        except OSError:
            eof = False
        s.close()
        if not eof:
            raise StepFailed("connection not closed by stop after restart")
        return (f"MainPID {pid} -> {new}, {handed['MESSAGE']!r}, "
                f"{adopted['MESSAGE']!r}, the connection still answered; "
                f"{stored} fds stored while running; closed at stop")

    def reexec(self):
        """SIGUSR2 re-executes in place: same PID, connections kept."""
        self.reset()
        self.systemctl("start", "epolld.socket")
        s = self.connect()
        exchange(s)
        pid = self.main_pid()
        c = self.cursor()
        self.systemctl("kill", "--kill-who=main", "--signal=SIGUSR2",
                       "epolld.service")
        msg = self.wait_message(c, r"SIGUSR2: re-executing")
        adopted = self.wait_message(c, r"adopted \d+ of \d+ inherited "
                                       r"connection")
        wait_for("epolld.service running after re-exec",
                 lambda: self.show("epolld.service", "SubState")["SubState"]
                 == "running", 10)
        if self.main_pid() != pid:
            raise StepFailed(f"MainPID changed {pid} -> {self.main_pid()}")
        exchange(s)
        s.close()
        self.reset()
        return (f"{msg['MESSAGE']!r}, {adopted['MESSAGE']!r}, same MainPID "
                f"{pid}, the connection still answered")

    def watchdog(self):
        self.reset()
        dropin = "/run/systemd/system/epolld.service.d/50-systest-watchdog.conf"
        self.ct.write_file(dropin, f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\n"
                                   "TimeoutAbortSec=5s\n")
        try:
            self.systemctl("daemon-reload")
            self.systemctl("start", "epolld.service", timeout=40)
            usec = self.show("epolld.service", "WatchdogUSec")["WatchdogUSec"]
            pid = self.main_pid()
            # Alive past twice the timeout: the daemon's pings arrive.
            time.sleep(2 * WATCHDOG_SEC + 1)
            if self.main_pid() != pid:
                raise StepFailed(f"killed while running normally (pings "
                                 f"missing?): MainPID {pid} -> "
                                 f"{self.main_pid()}")
            c = self.cursor()
            self.ct.guest(["kill", "-STOP", str(pid)])
            started = time.monotonic()

            def restarted():
                st = self.show("epolld.service", "MainPID", "ActiveState",
                               "SubState", "NRestarts")
                return st if st["MainPID"] not in ("0", str(pid)) and \
                    st["SubState"] == "running" else None
            st = wait_for("restart with a new MainPID", restarted,
                          WATCHDOG_SEC + 15)
            took = time.monotonic() - started
            timeout_msg = self.ct.guest(
                ["journalctl", "--unit=epolld.service", "--no-pager",
                 "--quiet", f"--after-cursor={c}", "--grep=[Ww]atchdog"],
                check=False).stdout.strip().splitlines()
            if int(st["NRestarts"]) < 1 or not timeout_msg:
                raise StepFailed(f"{st}; watchdog journal lines: {timeout_msg}")
            s = self.connect()
            exchange(s)
            s.close()
            return (f"WatchdogUSec={usec}, stopped {pid}, restarted as "
                    f"{st['MainPID']} after {took:.1f}s (NRestarts="
                    f"{st['NRestarts']}); {timeout_msg[0].split(': ', 1)[-1]!r}")
        finally:
            self.ct.guest(["rm", "-f", dropin], check=False)
            self.systemctl("daemon-reload", check=False)
            self.reset()

    def security(self):
        out = self.ct.guest(["systemd-analyze", "security", "--no-pager",
                             "epolld.service"], check=False).stdout
        m = re.search(r"Overall exposure level for epolld\.service: "
                      r"(\d+\.\d+)", out)
        if not m:
            raise StepFailed(f"no overall exposure in:\n{out}")
        bad = [re.split(r"\s{2,}", line)[0][2:] for line in out.splitlines()
               if line.startswith("✗")]
        score = float(m.group(1))
        if score > MAX_EXPOSURE:
            raise StepFailed(f"exposure {score} > {MAX_EXPOSURE}; "
                             f"open: {', '.join(bad)}")
        return f"exposure {score} <= {MAX_EXPOSURE}; open: {', '.join(bad)}"

    def ip_allow_list(self):
        """Only loopback peers reach the socket-activated daemon. The kernel
        filters a socket by the cgroup of the unit that made it: the
        listener systemd passes (and what is accepted from it) by
        epolld.socket's list, not the service's, so both units carry it.
        Live, where systemd can attach its BPF filters (a unified cgroup
        hierarchy): an address outside the list is given to the
        container's lo (198.18.0.0/15, the test range) and a client bound
        to it connects to 127.0.0.1:PORT; its SYN must be dropped."""
        want = {"IPAddressDeny": {"0.0.0.0/0", "::/0"}, "IPAddressAllow": {"::1/128", "127.0.0.0/8"}}
        for unit in ("epolld.socket", "epolld.service"):
            got = {k: set(v.split()) for k, v in self.show(unit, *want).items()}
            if got != want:
                raise StepFailed(f"{unit}: {got}, expected {want}")
        why_not = self.no_bpf_firewall()
        if why_not:
            return (f"both units: IPAddressDeny=any, IPAddressAllow=localhost; no live check: "
                    f"{why_not}")
        self.reset()
        self.systemctl("start", "epolld.socket")
        ip = ["nsenter", f"--net=/proc/{self.ct.leader}/ns/net", "ip", "addr"]
        run(ip + ["add", f"{OUTSIDER}/32", "dev", "lo"], timeout=10)
        try:
            with self.connect() as inside:
                exchange(inside)
            self.expect_dropped()
        finally:
            run(ip + ["del", f"{OUTSIDER}/32", "dev", "lo"], timeout=10)
        return f"both units' lists set; 127.0.0.1 answered; {OUTSIDER} dropped within 2 s"

    def no_bpf_firewall(self):
        """Why systemd cannot filter IP traffic here, or None if it can: IP
        accounting rests on the same cgroup BPF support, and a transient
        unit shows whether its counters exist."""
        fs = self.ct.guest(["stat", "-fc", "%T", "/sys/fs/cgroup"]).stdout.strip()
        if fs != "cgroup2fs":
            return f"the guest's /sys/fs/cgroup is {fs}, not cgroup2"
        self.ct.guest(["systemd-run", "--unit", "epolld-bpf-probe", "-p", "IPAccounting=yes",
                       "sleep", "30"])
        try:
            got = self.show("epolld-bpf-probe.service", "IPIngressBytes")["IPIngressBytes"]
        finally:
            self.systemctl("stop", "epolld-bpf-probe.service", check=False)
        if not got.isdigit() or int(got) >= 2**64 - 1:
            return (f"systemd has no BPF firewall in this container (a unit with "
                    f"IPAccounting=yes shows IPIngressBytes={got})")
        return None

    def expect_dropped(self):
        outsider = self.ct.socket()
        outsider.settimeout(2)
        try:
            outsider.bind((OUTSIDER, 0))
            outsider.connect(("127.0.0.1", PORT))
            outsider.sendall(b"x\n")
            got = outsider.recv(3)
        except (socket.timeout, ConnectionError):
            return
        finally:
            outsider.close()
        raise StepFailed(f"a peer at {OUTSIDER} got {got!r}: the socket is not filtered")

    # shared waits

    def expect_running_or_activate(self):
        st = self.show("epolld.service", "SubState")["SubState"]
        if st != "running":
            self.systemctl("start", "epolld.socket")
            s = self.connect()
            exchange(s)
            s.close()

    def wait_ready(self):
        """After a reload: systemd has seen READY=1 (state back to running)."""
        wait_for("epolld.service back to running after reload",
                 lambda: self.show("epolld.service", "SubState")["SubState"]
                 == "running", 10)


# --- Driver --------------------------------------------------------------

def preflight(args):
    """Why this run cannot work here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", args.meson):
        if not shutil.which(tool):
            return f"{tool} not found"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--source", default=os.environ.get(
        "EPOLLD_SOURCE_ROOT", os.path.dirname(os.path.dirname(here))))
    ap.add_argument("--meson", default="meson")
    ap.add_argument("--rebuild-rootfs", action="store_true")
    ap.add_argument("--rootfs-timeout", type=int, default=300)
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (build, console log)")
    ap.add_argument("--timing-connections", type=int,
                    default=TIMING_CONNECTIONS,
                    help="connections held for restart-timing (capped at "
                         "what the descriptor limits allow)")
    args = ap.parse_args()

    code = begin(preflight(args), MACHINE, "boot_test.py")
    if code is not None:
        return code
    report = Report()
    work = tempfile.mkdtemp(prefix=f"{MACHINE}-{os.getpid()}-", dir="/var/tmp")
    ct = None
    try:
        got = {}

        def rootfs():
            got["root"], how = prepare_rootfs(args)
            return f"{got['root']} ({how})"

        def install():
            destdir = build_and_install(args, work)
            root = os.path.join(work, "root")
            run(["cp", "-a", "--reflink=auto", got["root"], root], timeout=120)
            copy_into(destdir, root)
            got["copy"] = root
            files = sorted(os.path.relpath(os.path.join(d, f), destdir)
                           for d, _, fs in os.walk(destdir) for f in fs)
            return "installed " + ", ".join("/" + f for f in files)

        def boot():
            nonlocal ct
            ct = Container(got["copy"], work)
            return ct.boot(timeout=90)

        for name, fn in (("rootfs", rootfs), ("build+install", install),
                         ("boot", boot)):
            if not report.step(name, fn):
                if ct and ct.nspawn:
                    log(f"console:\n{ct.console_tail()}")
                raise Abort(f"{name} failed")

        story = Story(ct)
        held = Held(story, args.timing_connections)
        steps = [("installed", story.installed),
                 ("socket-activation", story.socket_activation),
                 ("journal", story.journal_story),
                 ("reload", story.reload),
                 ("reload-broken", story.reload_broken),
                 ("stop", story.stop),
                 ("standalone", story.standalone),
                 ("restart", story.restart),
                 ("reexec", story.reexec),
                 ("watchdog", story.watchdog),
                 ("security", story.security),
                 ("ip-allow-list", story.ip_allow_list),
                 ("keep-100", held.keep_100),
                 ("half-close", held.half_close),
                 ("keep-1500", held.keep_1500),
                 ("stop-closes-all", held.stop_closes_all),
                 ("standalone-backlog", held.standalone_backlog),
                 ("restart-timing", held.restart_timing)]
        # A step that needs an earlier one's state is skipped when that failed.
        needs = {"journal": "socket-activation", "reload-broken": "reload",
                 "stop": "reload", "half-close": "keep-100",
                 "stop-closes-all": "keep-1500"}
        # Instances sharing the port (instances_story.py), last: they stop
        # the plain units first.
        steps += Instances(story).steps()
        needs.update({name: "instances-start" for name, _ in steps[-7:]})
        ok = {}
        for name, fn in steps:
            if name in needs and not ok.get(needs[name]):
                log(f"SKIP {name}: needs {needs[name]}")
                report.not_run.append(name)
                continue
            ok[name] = report.step(name, fn)
    except Abort as e:
        log(f"ABORT: {e}")
        report.failed += 1
    finally:
        finish(report, ct, work, args.keep)
    skipped = f", {len(report.not_run)} skipped" if report.not_run else ""
    log(f"{report.passed} passed, {report.failed} failed{skipped}")
    return 0 if report.failed == 0 and not report.not_run else 1


if __name__ == "__main__":
    sys.exit(main())
