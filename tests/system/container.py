#!/usr/bin/python3
"""A booted Debian 12 in systemd-nspawn, for boot_test.py.

The root file system is built once with mmdebstrap from the mirror that apt
is configured with (read at run time, never written down here) and cached
under /var/tmp by a hash of its recipe; each run boots a copy, so the cache
stays clean. epolld goes in from `meson install --destdir` of a /usr build.

The non-obvious ideas:
- The container gets its own loopback (--private-network), so port 8001
  cannot collide with the host. Tests talk to it from the host: a socket
  created after setns() into the container's network namespace stays there,
  so no client program is needed inside.
- Commands run inside through nsenter on the container's PID 1; nspawn runs
  with --keep-unit --register=no, since the host may have no system bus.
- nspawn starts inside a cgroup of its own (in every hierarchy it uses),
  named after this process, so teardown, or the next run after this one was
  killed outright, can find and kill whatever survives a poweroff, nspawn
  included, and remove the cgroups.
"""

import ctypes
import fcntl
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time

SUITE = "bookworm"
# Packages of the guest: epolld's run-time libraries, and what the
# operator's tools need: procps for kill(1) in ExecReload=, dbus for
# systemctl's usual path.
GUEST_PACKAGES = ["systemd", "dbus", "procps", "libinih1", "libsystemd0"]
# Bump when the way the root file system is made changes.
RECIPE_VERSION = "1"
CACHE_DIR = "/var/tmp/epolld-system-rootfs"
# The booted guest shows no login prompt on its console.
BOOT_HOOKS = ['systemctl --root="$1" mask console-getty.service']
MACHINE = "epolld-systest"
GUEST_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
             "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "TERM=dumb"]
CLONE_NEWNET = 0x40000000


class StepFailed(Exception):
    pass


class Abort(Exception):
    """A failure after which no later step can run."""


def log(msg):
    print(msg, flush=True)


def run(cmd, timeout, check=True, **kw):
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True,
                              timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"timed out after {timeout}s: {shlex.join(cmd)}")
    if check and proc.returncode != 0:
        raise StepFailed(f"rc {proc.returncode}: {shlex.join(cmd)}\n"
                         f"{tail(proc.stdout + proc.stderr)}")
    return proc


def tail(text, lines=40):
    kept = text.strip().splitlines()
    cut = f"[{len(kept) - lines} lines before]\n" if len(kept) > lines else ""
    return cut + "\n".join(kept[-lines:])


def wait_for(what, predicate, timeout, interval=0.2):
    """Poll PREDICATE until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise StepFailed(f"{what}: not within {timeout}s")
        time.sleep(interval)


# --- The root file system ------------------------------------------------

def apt_sources():
    """One-line `deb` entries for SUITE's main component, from apt's config."""
    entries = []
    stanzas = []
    for path in ["/etc/apt/sources.list"] + \
            sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                if not words or words[0] != "deb":
                    continue
                opts = ""
                if words[1].startswith("["):
                    end = next(i for i, w in enumerate(words) if w.endswith("]"))
                    opts = " ".join(words[1:end + 1])[1:-1]
                    words = [words[0]] + words[end + 1:]
                signed = re.search(r"signed-by=(\S+)", opts)
                stanzas.append({"Types": "deb", "URIs": words[1],
                                "Suites": words[2],
                                "Components": " ".join(words[3:]),
                                "Signed-By": signed.group(1) if signed else ""})
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path, encoding="utf-8") as f:
            for block in re.split(r"\n\s*\n", f.read()):
                fields = {}
                for line in block.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip()] = value.strip()
                if fields.get("Enabled", "yes") != "no":
                    stanzas.append(fields)
    for st in stanzas:
        if "deb" not in st.get("Types", "").split():
            continue
        if "main" not in st.get("Components", "").split():
            continue
        for suite in st.get("Suites", "").split():
            if suite not in (SUITE, SUITE + "-updates", SUITE + "-security"):
                continue
            for uri in st.get("URIs", "").split():
                signed = st.get("Signed-By", "")
                opts = f"[signed-by={signed}] " if signed.startswith("/") else ""
                entries.append(f"deb {opts}{uri} {suite} main")
    return entries


def rootfs_key(packages=GUEST_PACKAGES, variant="essential", hooks=BOOT_HOOKS):
    recipe = json.dumps([RECIPE_VERSION, SUITE, sorted(packages), variant,
                         hooks])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def prepare_rootfs(args, packages=GUEST_PACKAGES, cache_dir=CACHE_DIR,
                   variant="essential", hooks=BOOT_HOOKS):
    """The cached root file system, built first if needed: mmdebstrap's
    VARIANT with PACKAGES, then the customize HOOKS. A suite with another
    recipe keeps its own CACHE_DIR, so the suites do not evict each
    other's."""
    os.makedirs(cache_dir, exist_ok=True)
    key = rootfs_key(packages, variant, hooks)
    root = os.path.join(cache_dir, key)
    with open(os.path.join(cache_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if args.rebuild_rootfs and os.path.isdir(root):
            shutil.rmtree(root)
        if os.path.isfile(os.path.join(root, ".epolld-complete")):
            return root, "cached"
        for old in glob.glob(os.path.join(cache_dir, "*")):
            shutil.rmtree(old, ignore_errors=True)
        sources = apt_sources()
        if not sources:
            raise StepFailed(f"no '{SUITE}' main entries in apt's sources")
        partial = root + ".partial"
        started = time.monotonic()
        run(["mmdebstrap", "--mode=root", f"--variant={variant}",
             *(["--include=" + ",".join(packages)] if packages else []),
             *(f"--customize-hook={hook}" for hook in hooks),
             SUITE, partial, *sources], timeout=args.rootfs_timeout)
        open(os.path.join(partial, ".epolld-complete"), "w").close()
        os.rename(partial, root)
        return root, f"built in {time.monotonic() - started:.0f}s"


# --- Build and install ---------------------------------------------------

def build_and_install(args, work):
    """`meson install --destdir` of a /usr build; returns the DESTDIR."""
    build = os.path.join(work, "build")
    destdir = os.path.join(work, "destdir")
    run([args.meson, "setup", build, args.source, "--prefix=/usr",
         "--sysconfdir=/etc", "--buildtype=debugoptimized"], timeout=120)
    run([args.meson, "compile", "-C", build], timeout=300)
    run([args.meson, "install", "-C", build, "--destdir", destdir,
         "--no-rebuild", "--quiet"], timeout=120)
    return destdir


def copy_into(destdir, root):
    """Copy DESTDIR into ROOT, following ROOT's /lib -> usr/lib symlinks."""
    pack = subprocess.Popen(["tar", "-C", destdir, "-c", "."],
                            stdout=subprocess.PIPE)
    unpack = subprocess.run(["tar", "-C", root, "-x",
                             "--keep-directory-symlink", "--no-same-owner"],
                            stdin=pack.stdout, capture_output=True, timeout=60)
    pack.stdout.close()
    if pack.wait(timeout=60) != 0 or unpack.returncode != 0:
        raise StepFailed(f"copying DESTDIR failed: {unpack.stderr.decode()}")


# --- The container -------------------------------------------------------

def cgroup_bases():
    """Our cgroup in each hierarchy that nspawn uses: the unified one (at
    /sys/fs/cgroup or, on a hybrid host, /sys/fs/cgroup/unified) and the
    legacy name=systemd one if present."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    bases = []
    for mount, rel in (("/sys/fs/cgroup/unified", own.get("")),
                       ("/sys/fs/cgroup", own.get("")),
                       ("/sys/fs/cgroup/systemd", own.get("name=systemd"))):
        if rel is not None and os.path.isfile(os.path.join(mount,
                                                           "cgroup.procs")):
            bases.append(os.path.join(mount, rel.lstrip("/")))
    return bases


def is_running_test(pid, script="boot_test.py"):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return script.encode() in f.read()
    except OSError:
        return False


def clean_stale(machine=MACHINE, script="boot_test.py"):
    """Remove what an earlier run of SCRIPT that was killed outright left
    behind: its container (found by cgroup), cgroups and work directory.
    Each suite has its own MACHINE prefix, so two suites can run at once."""
    cleaned = []
    for base in cgroup_bases():
        for path in glob.glob(os.path.join(base, machine + "-*")):
            pid = path.rsplit("-", 1)[1]
            if pid.isdigit() and not is_running_test(int(pid), script):
                if kill_cgroup(path) and remove_cgroup(path):
                    cleaned.append(path)
    for path in glob.glob(f"/var/tmp/{machine}-*"):
        pid = os.path.basename(path)[len(machine) + 1:].split("-")[0]
        if pid.isdigit() and not is_running_test(int(pid), script) and not any(
                glob.glob(os.path.join(b, f"{machine}-{pid}"))
                for b in cgroup_bases()):
            shutil.rmtree(path, ignore_errors=True)
            cleaned.append(path)
    for path in glob.glob(f"/run/systemd/nspawn/propagate/{machine}-*"):
        pid = path.rsplit("-", 1)[1]
        if pid.isdigit() and not is_running_test(int(pid), script):
            try:
                os.rmdir(path)
            except OSError:
                pass
    return cleaned



class Report:
    """PASS or FAIL per step, with its time and what it found."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.not_run = []

    def step(self, name, fn, *args):
        started = time.monotonic()
        try:
            detail = fn(*args)
        except (StepFailed, OSError, KeyError, ValueError,
                AttributeError) as e:
            self.failed += 1
            log(f"FAIL {name} ({time.monotonic() - started:.1f}s): "
                f"{type(e).__name__ + ': ' if not isinstance(e, StepFailed) else ''}{e}")
            return False
        self.passed += 1
        log(f"PASS {name} ({time.monotonic() - started:.1f}s): {detail}")
        return True


def begin(why_not, machine, script):
    """The common start of a suite: an exit code if it cannot run here
    (WHY_NOT from its preflight: a skip, 77, unless CI's
    EPOLLD_REQUIRE_SYSTEM_TEST=1 says it must run), else None, once
    SIGTERM (meson's timeout) and SIGINT tear down like a failure and what
    a killed earlier run of SCRIPT left is gone."""
    if why_not:
        required = os.environ.get("EPOLLD_REQUIRE_SYSTEM_TEST") == "1"
        log(f"{'FAIL' if required else 'SKIP'}: {why_not}")
        return 1 if required else 77

    def on_signal(signum, _):
        raise Abort(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stale = clean_stale(machine, script)
    if stale:
        log(f"removed leftovers of a killed run: {', '.join(stale)}")
    return None

def kill_cgroup(cgroup):
    """Kill every process in CGROUP and below; True once it is empty."""
    kill_file = os.path.join(cgroup, "cgroup.kill")
    for _ in range(50):
        pids = set()
        for dirpath, _, files in os.walk(cgroup):
            if "cgroup.procs" in files:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids.update(int(p) for p in f.read().split())
        if not pids:
            return True
        if os.path.exists(kill_file):
            with open(kill_file, "w") as f:
                f.write("1")
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.1)
    return False

def recv_reply(s, n=3):
    """Up to N bytes from S: fewer only if the peer closes first."""
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def exchange(s, data=b"hello\n"):
    """Send DATA on S and expect exactly b'Hi!' back, nothing more."""
    s.sendall(data)
    got = recv_reply(s)
    if got != b"Hi!":
        raise StepFailed(f"expected b'Hi!', got {got!r}")
    timeout = s.gettimeout()
    s.settimeout(0.3)
    try:
        extra = s.recv(64)
    except socket.timeout:
        extra = None
    finally:
        s.settimeout(timeout)
    if extra:
        raise StepFailed(f"extra bytes after Hi!: {extra!r}")


def finish(report, ct, work, keep, cleanup=None):
    """The common end of a suite, failed or not: CLEANUP, the container's
    teardown, and the work directory removed unless kept (or a container
    survived it)."""
    if cleanup:
        cleanup()
    if ct:
        notes = ct.teardown()
        if notes:
            log(f"teardown: {notes}")
    if keep or (ct and ct.alive):
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)



def remove_cgroup(cgroup):
    """rmdir CGROUP and its children, deepest first; True if all went."""
    ok = True
    for dirpath, _, _ in sorted(os.walk(cgroup), reverse=True):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError:
            ok = False
    return ok


class Container:
    def __init__(self, root, work, machine=MACHINE, nspawn_args=()):
        """NSPAWN_ARGS: more systemd-nspawn options (--bind-ro=, say)."""
        self.root = root
        self.work = work
        self.name = f"{machine}-{os.getpid()}"
        self.nspawn_args = list(nspawn_args)
        self.nspawn = None
        self.leader = None
        self.cgroups = []
        self.alive = False  # set when teardown could not end the container
        self.console = os.path.join(work, "console.log")

    def _make_cgroups(self):
        """A cgroup for nspawn in each hierarchy it will use."""
        for base in cgroup_bases():
            path = os.path.join(base, self.name)
            os.makedirs(path, exist_ok=True)
            self.cgroups.append(path)

    def boot(self, timeout):
        self._make_cgroups()
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        procs_files = [os.path.join(c, "cgroup.procs") for c in self.cgroups]
        # Enter our cgroups before exec, so nspawn's children start there.
        enter = "; ".join(f"echo $$ > {shlex.quote(p)}" for p in procs_files)
        cmd = ["sh", "-c", enter + '; exec "$@"', "sh",
               "systemd-nspawn", "--quiet", "--directory", self.root,
               "--machine", self.name, "--keep-unit", "--register=no",
               "--private-network", "--console=read-only",
               "--link-journal=no", "--resolv-conf=off", "--timezone=off",
               *self.nspawn_args, "--boot"]
        with open(self.console, "wb") as out:
            self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                           stdout=out, stderr=subprocess.STDOUT,
                                           env=env)
        self.leader = wait_for("container PID 1", self._find_leader, timeout)
        deadline = time.monotonic() + timeout
        seen = []

        def booted():
            # Right after PID 1 appears, systemctl may not reach it yet.
            left = max(1, int(deadline - time.monotonic()))
            proc = self.guest(["systemctl", "is-system-running", "--wait"],
                              timeout=left, check=False)
            seen.append((proc.stdout + proc.stderr).strip())
            return proc.stdout.strip() or None
        state = wait_for("systemctl is-system-running", booted, timeout,
                         interval=0.5)
        if state not in ("running", "degraded"):
            raise StepFailed(f"system state {state!r} (seen: {seen})")
        failed = self.guest(["systemctl", "--failed", "--plain",
                             "--no-legend"], timeout=10).stdout.strip()
        return f"{state}" + (f" (failed: {failed})" if failed else "")

    def spawn(self, nspawn_args, out):
        """systemd-nspawn NSPAWN_ARGS on the root, in this container's
        cgroups, output to the file OUT; a Popen, not waited for. For a
        command that does not boot (boot() is for one that does)."""
        if not self.cgroups:
            self._make_cgroups()
        procs_files = [os.path.join(c, "cgroup.procs") for c in self.cgroups]
        enter = "; ".join(f"echo $$ > {shlex.quote(p)}" for p in procs_files)
        cmd = ["sh", "-c", enter + '; exec "$@"', "sh",
               "systemd-nspawn", "--quiet", "--directory", self.root,
               "--machine", self.name, "--keep-unit", "--register=no",
               *nspawn_args]
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=dict(os.environ,
                                         SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"))

    def processes(self):
        """PIDs (host's view) of every process in this container's cgroups."""
        pids = set()
        for cgroup in self.cgroups:
            for dirpath, _, files in os.walk(cgroup):
                if "cgroup.procs" in files:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        pids.update(int(p) for p in f.read().split())
        return pids

    def _find_leader(self):
        if self.nspawn.poll() is not None:
            raise Abort(f"systemd-nspawn exited {self.nspawn.returncode}; "
                        f"console:\n{self.console_tail()}")
        for path in glob.glob("/proc/[0-9]*/status"):
            try:
                with open(path) as f:
                    status = f.read()
            except OSError:
                continue
            ppid = re.search(r"^PPid:\s+(\d+)", status, re.M)
            nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M)
            if ppid and int(ppid.group(1)) == self.nspawn.pid and nspid \
                    and nspid.group(1).split()[-1] == "1":
                return int(path.split("/")[2])
        return None

    def console_tail(self, lines=30):
        try:
            with open(self.console, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _nsenter(self, cmd):
        return ["nsenter", "--target", str(self.leader), "--all", "--root",
                "--wd", "--", "env", "-i", *GUEST_ENV, *cmd]

    def guest(self, cmd, timeout=30, check=True, input_text=None):
        full = self._nsenter(cmd)
        if input_text is None:
            return run(full, timeout=timeout, check=check)
        try:
            proc = subprocess.run(full, input=input_text, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"timed out after {timeout}s: {shlex.join(cmd)}")
        if check and proc.returncode != 0:
            raise StepFailed(f"rc {proc.returncode}: {shlex.join(cmd)}\n"
                             f"{tail(proc.stdout + proc.stderr)}")
        return proc

    def guest_background(self, cmd):
        """CMD started inside, not waited for: a Popen with text output."""
        return subprocess.Popen(self._nsenter(cmd), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def write_file(self, path, text):
        self.guest(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"',
                    "sh", path], input_text=text)

    def read_file(self, path):
        return self.guest(["cat", path]).stdout

    def socket(self):
        """A TCP socket in the container's network namespace."""
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/proc/{self.leader}/ns/net") as theirs, \
                open("/proc/self/ns/net") as ours:
            if libc.setns(theirs.fileno(), CLONE_NEWNET) != 0:
                raise StepFailed(f"setns: {os.strerror(ctypes.get_errno())}")
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                if libc.setns(ours.fileno(), CLONE_NEWNET) != 0:
                    raise Abort("cannot return to the host's network namespace")

    def teardown(self):
        """Poweroff, wait, then kill what is left and remove the cgroups."""
        notes = []
        if self.nspawn and self.nspawn.poll() is None:
            if self.leader:
                try:
                    self.guest(["systemctl", "poweroff", "--no-block"],
                               timeout=10, check=False)
                except StepFailed as e:
                    notes.append(str(e))
            try:
                self.nspawn.wait(timeout=30)
                notes.append("powered off")
            except subprocess.TimeoutExpired:
                notes.append("no poweroff within 30s, killing")
        for cgroup in reversed(self.cgroups):
            if not kill_cgroup(cgroup):
                self.alive = True
                notes.append(f"processes survive in {cgroup}")
        if self.nspawn:
            try:
                self.nspawn.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(timeout=10)
        for cgroup in self.cgroups:
            if not remove_cgroup(cgroup):
                notes.append(f"cgroup {cgroup} not removed")
        propagate = f"/run/systemd/nspawn/propagate/{self.name}"
        if os.path.isdir(propagate):
            try:
                os.rmdir(propagate)
            except OSError:
                pass
        return ", ".join(notes)
