#!/usr/bin/python3
"""The README's Quick start, run as a newcomer runs it on a fresh Debian 12.

A pristine root file system (mmdebstrap's `important` variant: what the
Debian installer lays down, no compiler, no meson, no Python) gets the
committed files (`git ls-files`) in /root/epolld; the two ```sh blocks of
README.md's "Quick start" run there, read from README.md at run time: the
first in the background until the daemon it ends with answers `Hi!` on
127.0.0.1:8001, then the second, which must pass in full (no failure, no
skipped test, in meson's summary or pytest's). So the suite fails
when the install line misses a package, a test needs something the README
does not install, or a file the build or a test needs is not committed.

The non-obvious ideas:
- Every command runs under systemd-nspawn (container.py), not chroot, and
  WITHOUT --private-network: apt must reach the mirror, and nspawn keeps
  CAP_NET_ADMIN only for a private network, so the tests run without it, as
  in a container a newcomer might use. The suite checks that (CapEff) first.
- Sharing the host's network means the daemon listens on the host's
  127.0.0.1:8001: the suite fails at once if that port is taken, and takes
  a `Hi!` as the daemon's only if the listening socket is in the daemon's
  descriptor table, so a stranger on 8001 cannot pass for it.
- The daemon is found through the container's cgroup and stopped by PID
  with SIGTERM; command 1's status is then the daemon's clean exit, 0.
Needs root, systemd-nspawn, mmdebstrap and git; without them it is skipped
(exit 77) unless EPOLLD_REQUIRE_SYSTEM_TEST=1.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from container import (Abort, Container, Report, StepFailed, begin, exchange,
                       finish, log, prepare_rootfs, run, tail, wait_for)

MACHINE = "epolld-newcomer"
CACHE_DIR = "/var/tmp/epolld-newcomer-rootfs"
PORT = 8001
GUEST_DIR = "/root/epolld"
# Not in what the Debian installer lays down; the Quick start installs them.
ABSENT = ["gcc", "meson", "python3-pytest"]
CAP_NET_ADMIN = 12
# How every command enters the root file system: no boot (the payload runs
# as PID 2 under nspawn's stub init, which reaps orphans), the host's network
# and resolv.conf, no extra capabilities.
GUEST_ARGS = ["--as-pid2", f"--chdir={GUEST_DIR}", "--console=pipe",
              "--link-journal=no", "--timezone=off", "--resolv-conf=copy-host"]


# --- README.md -----------------------------------------------------------

def quick_start(source):
    """The first two ```sh blocks under README.md's "## Quick start"."""
    path = os.path.join(source, "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Quick start\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not m:
        raise Abort(f"{path}: no '## Quick start' section")
    blocks = re.findall(r"^```sh\n(.*?)^```$", m.group(1), re.M | re.S)
    if len(blocks) < 2 or not all(b.strip() for b in blocks[:2]):
        raise Abort(f"{path}: '## Quick start' has {len(blocks)} non-empty "
                    f"```sh blocks, this suite runs the first two")
    return [b.strip() for b in blocks[:2]]


# --- The host side -------------------------------------------------------

def port_free():
    """Fail unless the host's 127.0.0.1:PORT can be bound, as the daemon will."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", PORT))
    except OSError as e:
        raise Abort(f"127.0.0.1:{PORT} on this host is taken ({e.strerror}); "
                    f"the Quick start's daemon listens there, and this suite "
                    f"shares the host's network")
    finally:
        s.close()
    return f"127.0.0.1:{PORT} is free on the host"


def pristine(root):
    """Fail if the cached root file system already has the build tools."""
    found = []
    for pkg in ABSENT:
        q = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                 "-f=${db:Status-Status}", pkg], timeout=30, check=False)
        if q.stdout.strip() == "installed":
            found.append(pkg)
    if found:
        raise StepFailed(f"not pristine, has {', '.join(found)}")
    return f"none of {', '.join(ABSENT)} installed"


def copy_tracked(source, root):
    """The files `git ls-files` names (their working copies), nothing else."""
    files = run(["git", "-C", source, "ls-files", "-z"], timeout=30).stdout
    dest = os.path.join(root, GUEST_DIR.lstrip("/"))
    os.makedirs(dest)
    pack = subprocess.Popen(["tar", "-C", source, "--null", "-T", "-", "-c",
                             "--owner=0", "--group=0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    unpack = subprocess.Popen(["tar", "-C", dest, "-x"], stdin=pack.stdout,
                              stderr=subprocess.PIPE)
    pack.stdout.close()
    pack.stdin.write(files.encode())
    pack.stdin.close()
    err = unpack.communicate(timeout=120)[1]
    if pack.wait(timeout=10) != 0 or unpack.returncode != 0:
        raise StepFailed(f"copying the tracked files failed: {err.decode()}")
    return f"{files.count(chr(0))} tracked files to {GUEST_DIR}"


def answers_hi():
    """True if 127.0.0.1:PORT answers a line with exactly b'Hi!'."""
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2) as s:
            exchange(s)
            return True
    except (ConnectionRefusedError, socket.timeout):
        return False


def listener_inode():
    """The inode of the socket listening on 127.0.0.1:PORT, or None."""
    want = f"0100007F:{PORT:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return fields[9]
    return None


def daemon_pid(ct):
    """The PID of the Quick start's epolld in the container, or None."""
    # By name only: the README chooses the build directory, and the kernel
    # names the binary as the container's mount namespace sees it.
    for pid in ct.processes():
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "epolld":
                return pid
        except OSError:
            continue
    return None


def owns_socket(pid, inode):
    target = f"socket:[{inode}]"
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


# --- The newcomer's commands ---------------------------------------------

class Newcomer:
    def __init__(self, ct, root, work, commands, timeouts):
        self.ct = ct
        self.root = root
        self.work = work
        self.commands = commands
        self.timeouts = timeouts
        self.running = None  # command 1's nspawn while its daemon serves
        self.statuses = []  # repeated at the end: meson shows only the tail

    def _log(self, n):
        return os.path.join(self.work, f"command{n}.log")

    def _output(self, n):
        with open(self._log(n), errors="replace") as f:
            return f.read()

    def _guest(self, n, script):
        with open(self._log(n), "wb") as out:
            return self.ct.spawn([*GUEST_ARGS, "--", "sh", "-c", script], out)

    def _wait(self, n, proc, timeout):
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Abort(f"command {n} still running after {timeout}s; "
                        f"output:\n{tail(self._output(n))}")

    def _status(self, n, cmd, rc, took):
        line = f"$ {cmd}\n  command {n}: exit status {rc}, {took:.0f}s"
        self.statuses.append(line)
        log(line)

    def capabilities(self):
        proc = self._guest(0, "grep ^CapEff: /proc/self/status")
        rc = self._wait(0, proc, 60)
        out = self._output(0)
        m = re.search(r"^CapEff:\s+([0-9a-f]+)$", out, re.M)
        if rc != 0 or not m:
            raise Abort(f"exit {rc}: {out.strip()}")
        if int(m.group(1), 16) & (1 << CAP_NET_ADMIN):
            raise Abort(f"CapEff {m.group(1)} has CAP_NET_ADMIN: this would "
                        f"not be the container the suite claims")
        return f"CapEff {m.group(1)}: no CAP_NET_ADMIN"

    def first(self):
        """Command 1 in the background until its daemon answers, then stopped."""
        cmd = self.commands[0]
        started = time.monotonic()
        proc = self._guest(1, cmd)
        self.running = proc

        def daemon_answers():
            if proc.poll() is not None:
                self._status(1, cmd, proc.returncode,
                             time.monotonic() - started)
                raise StepFailed(f"command 1 ended before its daemon "
                                 f"answered; output:\n"
                                 f"{tail(self._output(1), 60)}")
            pid = daemon_pid(self.ct)
            return pid if pid and answers_hi() else None
        pid = wait_for(f"b'Hi!' on 127.0.0.1:{PORT}", daemon_answers,
                       self.timeouts[0], interval=1)
        ready = time.monotonic() - started
        inode = listener_inode()
        if not inode or not owns_socket(pid, inode):
            raise StepFailed(f"b'Hi!' came from 127.0.0.1:{PORT}, but its "
                             f"listener (inode {inode}) is not epolld's "
                             f"(PID {pid})")
        os.kill(pid, signal.SIGTERM)
        rc = self._wait(1, proc, 30)
        self.running = None
        self._status(1, cmd, rc, time.monotonic() - started)
        out = self._output(1)
        if rc != 0:
            raise StepFailed(f"exit status {rc} after SIGTERM; output:\n"
                             f"{tail(out, 60)}")
        last = "\n".join(out.strip().splitlines()[-3:])
        return (f"b'Hi!' from epolld (host PID {pid}) {ready:.0f}s after "
                f"the start; SIGTERM, exit 0; last lines:\n{last}")

    def second(self):
        """Command 2 in the same tree: exit 0, and nothing but passes in
        meson's summary and in pytest's."""
        cmd = self.commands[1]
        started = time.monotonic()
        proc = self._guest(2, cmd)
        rc = self._wait(2, proc, self.timeouts[1])
        self._status(2, cmd, rc, time.monotonic() - started)
        out = self._output(2)
        log(out.rstrip())
        summary = dict(re.findall(r"^(Ok|Expected Fail|Fail|Unexpected Pass"
                                  r"|Skipped|Timeout):\s+(\d+)", out, re.M))
        bad = {k: v for k, v in summary.items()
               if k not in ("Ok", "Expected Fail") and v != "0"}
        if rc != 0 or bad or int(summary.get("Ok", "0")) == 0:
            raise StepFailed(f"exit status {rc}, summary {summary}")
        skipped = self._pytest_skips()
        if skipped:
            raise StepFailed(f"not in full: pytest skipped tests in "
                             f"{skipped} (see build/meson-logs/testlog.txt)")
        return ", ".join(f"{k} {v}" for k, v in summary.items()) + \
            ", no test skipped"

    def _pytest_skips(self):
        """{meson test: pytest's skip count} from command 2's test log. "In
        full" means none: a skip is how a missing tool would hide."""
        path = os.path.join(self.root, GUEST_DIR.lstrip("/"),
                            "build/meson-logs/testlog.txt")
        with open(path, errors="replace") as f:
            text = f.read()
        found = {}
        for section in re.split(r"^(?=test:\s)", text, flags=re.M)[1:]:
            name = section.split("\n", 1)[0].split(None, 1)[1]
            m = re.search(r"^.*\b(\d+) skipped\b.* in [0-9.]+s", section,
                          re.M)
            if m:
                found[name] = int(m.group(1))
        return found

    def stop(self):
        """Command 1's nspawn, if it still runs (teardown kills the rest)."""
        proc = self.running
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


# --- Driver --------------------------------------------------------------

def preflight(args):
    """Why this run cannot work here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("systemd-nspawn", "mmdebstrap", "git", "dpkg-query"):
        if not shutil.which(tool):
            return f"{tool} not found"
    if run(["git", "-C", args.source, "rev-parse", "--git-dir"], timeout=30,
           check=False).returncode != 0:
        return f"{args.source} is not a git checkout"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--source", default=os.environ.get(
        "EPOLLD_SOURCE_ROOT", os.path.dirname(os.path.dirname(here))))
    ap.add_argument("--rebuild-rootfs", action="store_true")
    ap.add_argument("--rootfs-timeout", type=int, default=300)
    ap.add_argument("--first-timeout", type=int, default=600,
                    help="seconds for command 1 to serve (apt, build)")
    ap.add_argument("--second-timeout", type=int, default=600,
                    help="seconds for command 2 (the test suite)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (root, command logs)")
    args = ap.parse_args()

    code = begin(preflight(args), MACHINE, "newcomer_test.py")
    if code is not None:
        return code
    report = Report()
    work = tempfile.mkdtemp(prefix=f"{MACHINE}-{os.getpid()}-", dir="/var/tmp")
    root = os.path.join(work, "root")
    ct = Container(root, work, machine=MACHINE)
    newcomer = None
    started = time.monotonic()
    try:
        commands = quick_start(args.source)
        got = {}

        def rootfs():
            got["cache"], how = prepare_rootfs(
                args, packages=[], cache_dir=CACHE_DIR, variant="important",
                hooks=[])
            return f"{got['cache']} ({how}); {pristine(got['cache'])}"

        def copy():
            run(["cp", "-a", "--reflink=auto", got["cache"], root],
                timeout=120)
            return copy_tracked(args.source, root)

        newcomer = Newcomer(ct, root, work, commands,
                            (args.first_timeout, args.second_timeout))
        for name, fn in (("port", port_free), ("rootfs", rootfs),
                         ("copy", copy),
                         ("capabilities", newcomer.capabilities)):
            if not report.step(name, fn):
                raise Abort(f"{name} failed")
        if report.step("command-1", newcomer.first):
            report.step("command-2", newcomer.second)
        else:
            log("SKIP command-2: needs command-1")
    except Abort as e:
        log(f"ABORT: {e}")
        report.failed += 1
    finally:
        finish(report, ct, work, args.keep, newcomer.stop if newcomer else None)
    if newcomer and newcomer.statuses:
        log("\n".join(newcomer.statuses))
    log(f"{report.passed} passed, {report.failed} failed "
        f"in {time.monotonic() - started:.0f}s")
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
