"""netns.py: a small network of hosts made of Linux network namespaces.

Every host is a namespace named PREFIX-PID-ROLE with one interface, eth0,
whose peer sits in a "switch" namespace and is a port of the bridge there:
nothing is created in, routed to or reachable from the namespace this runs
in. Processes are started in a host with `ip netns exec` (which execs the
command, so the Popen's pid is the process's own) and stopped by that pid;
sockets are made in a host by switching the calling thread's namespace
with setns(2) (a socket stays in the namespace it was made in).

Network.remove() ends what it started and deletes the namespaces; it is
safe to call twice and after a failure half-way. remove_stale() cleans up
after an earlier run that was killed before it could do so.
"""

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import time

PREFIX = "epfleet"
CLONE_NEWNET = 0x40000000
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
_libc = ctypes.CDLL(None, use_errno=True)


def missing_capability():
    """None, or the name of a capability this process lacks for the suite."""
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
        if not eff & (1 << bit):
            return name
    return None


def run(argv, timeout=30):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def _setns(fd, what):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")


@contextlib.contextmanager
def inside(ns):
    """Run the body with this thread in network namespace ns."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, ns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home, "back home")
    finally:
        os.close(home)


def enter(ns):
    """Move this thread into ns for good (a worker thread's first step)."""
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, ns)
    finally:
        os.close(target)


def stop_pid(p, grace=5.0):
    """SIGTERM, then SIGKILL after grace seconds; the exit status."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=grace)
    return p.returncode


def remove_stale():
    """Delete the namespaces of earlier runs whose process is gone, after
    ending what still runs in them (which only such a run started)."""
    names = [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line]
    removed = []
    for ns in names:
        m = re.fullmatch(rf"{PREFIX}-(\d+)-\w+", ns)
        if not m or os.path.exists(f"/proc/{m.group(1)}"):
            continue
        for pid in run(["ip", "netns", "pids", ns]).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", ns])
        removed.append(ns)
    return removed


class Network:
    """Hosts on one bridge: add(role, address), then start processes."""

    def __init__(self, prefix_len):
        self.prefix_len = prefix_len
        self.base = f"{PREFIX}-{os.getpid()}"
        self.switch = f"{self.base}-switch"
        self.hosts = {}      # role -> namespace
        self.procs = []      # every Popen started here
        self.namespaces = []
        self._add_ns(self.switch)
        run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.switch, "link", "set", "br0", "up"])

    def _add_ns(self, ns):
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def add(self, role, address):
        ns = f"{self.base}-{role}"
        self._add_ns(ns)
        # The veth pair is made inside the switch and one end moved to the
        # host: the calling namespace never holds either end.
        run(["ip", "-n", self.switch, "link", "add", role, "type", "veth",
             "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", self.switch, "link", "set", role, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/{self.prefix_len}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self.hosts[role] = ns
        return ns

    def start(self, role, argv, log_path):
        """Start argv in host role, stdout and stderr appended to log_path."""
        with open(log_path, "ab") as log:
            p = subprocess.Popen(["ip", "netns", "exec", self.hosts[role], *argv],
                                 stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def run_in(self, role, argv, timeout):
        return subprocess.run(["ip", "netns", "exec", self.hosts[role], *argv],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def remove(self):
        for p in self.procs:
            stop_pid(p, grace=3.0)
        self.procs = []
        errors = []
        for ns in reversed(self.namespaces):
            for pid in run(["ip", "netns", "pids", ns]).split():  # none of ours, normally
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                run(["ip", "netns", "del", ns])
            except RuntimeError as e:
                errors.append(str(e))
        self.namespaces = []
        if errors:
            raise RuntimeError("; ".join(errors))


def wait_until(cond, timeout, what, interval=0.05):
    """Poll cond() until it is true; its last value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
