#!/usr/bin/python3
"""epolld's Debian package on a really booted Debian 12, as an operator.

Builds the package twice from a clean clone of the repository (the second
time with a higher version in a scratch changelog entry), checks both
with lintian, then boots a pristine Debian 12 (systemd, dbus and apt only,
no libinih1, no procps) in systemd-nspawn (container.py) and runs:
install with `apt-get install ./epolld_*.deb`, the socket-activated
service answering nc with no other step, an upgrade holding 100
connections with an edited conffile, remove, and purge, comparing the
guest's file list, users and units before the install and after the
purge.

The guest has no network (--private-network). Its only apt source is a
`file:` repository, bind-mounted read-only, that holds the host's copies of
the packages of epolld's dependency closure that the guest lacks: apt has
to find and pull them itself. Every step prints PASS or FAIL with what it
saw; the run ends with "N passed, N failed". Needs root, systemd-nspawn,
mmdebstrap, dpkg-buildpackage, lintian and git; without them it is skipped
(exit 77) unless EPOLLD_REQUIRE_SYSTEM_TEST=1.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from boot_test import Story
from clients import Pool
from container import (Abort, Container, Report, StepFailed, begin, finish, log,
                       prepare_rootfs, run, wait_for)

PORT = 8001
CONFIG = "/etc/epolld/epolld.ini"
MACHINE = "epolld-pkgtest"
# A pristine guest: what a booted Debian with apt minimally has. epolld's
# run-time dependencies (libinih1, procps) are deliberately missing.
GUEST_PACKAGES = ["systemd", "dbus", "apt"]
CACHE_DIR = "/var/tmp/epolld-package-rootfs"
# Where the guest sees the packages and the apt repository (read-only).
REPO = "/srv/repo"
UPGRADE_VERSION_SUFFIX = "+ci1"
HELD = 100
# container.py's mark of a complete cached root file system.
ROOTFS_MARK = ".epolld-complete"
APT_ENV = ["env", "DEBIAN_FRONTEND=noninteractive"]
# What the guest's own bookkeeping changes between the install and the
# purge (logs, apt's and dpkg's caches and backups, systemd's state);
# anything else that differs is a leftover. Paths relative to the root.
VOLATILE = (r"var/log/", r"var/cache/apt/", r"var/cache/debconf/.*-old$",
            r"var/lib/apt/", r"var/lib/dpkg/[^/]*-old$",
            r"var/lib/dpkg/(lock|lock-frontend|triggers/Lock)$",
            r"var/lib/systemd/(catalog|random-seed|timers|coredump)",
            # ldconfig's cache, written by the libraries' triggers.
            r"var/cache/ldconfig/aux-cache$",
            r"etc/machine-id$", r"etc/\.pwd\.lock$")


def clone_and_build(args, work):
    """Clean clones built with dpkg-buildpackage: the source's version
    (source and binary) and a higher one (binary). Returns the directory
    of each version's output, the upstream commit, and the versions."""
    head = run(["git", "-C", args.source, "rev-parse", "--short", "HEAD"],
               timeout=10).stdout.strip()
    dirty = run(["git", "-C", args.source, "status", "--porcelain"],
                timeout=30).stdout.strip()
    out = {}
    for name in ("v1", "v2"):
        top = os.path.join(work, name)
        src = os.path.join(top, "epolld")
        os.makedirs(top)
        run(["git", "clone", "--quiet", "--no-hardlinks", args.source, src],
            timeout=120)
        if name == "v2":
            bump_changelog(src)
        build = ["dpkg-buildpackage", "-us", "-uc"] + (
            [] if name == "v1" else ["-b"])
        started = time.monotonic()
        run(build, timeout=600, cwd=src)
        out[name] = (top, time.monotonic() - started)
    versions = [deb_field(only(out[n][0], "epolld_*.deb"), "Version")
                for n in ("v1", "v2")]
    upstream = project_version(os.path.join(out["v1"][0], "epolld"))
    if versions[0] != upstream:
        raise StepFailed(f"debian/changelog says {versions[0]}, meson.build "
                         f"{upstream}: add a changelog entry")
    note = f"clone of {head}" + (" (uncommitted changes are not in it)"
                                 if dirty else "")
    return out, note, versions


def project_version(src):
    with open(os.path.join(src, "meson.build"), encoding="utf-8") as f:
        m = re.search(r"^project\(.*?version\s*:\s*'([^']+)'", f.read(),
                      re.M | re.S)
    return m.group(1) if m else None


def bump_changelog(src):
    """A new top entry, VERSION+ci1, in the scratch clone's changelog."""
    path = os.path.join(src, "debian", "changelog")
    with open(path, encoding="utf-8") as f:
        old = f.read()
    first = old.splitlines()[0]
    m = re.match(r"(\S+) \(([^)]+)\) (.*)$", first)
    trailer = re.search(r"^ -- .*$", old, re.M).group(0)
    maint = re.match(r" -- (.*?>)", trailer).group(1)
    date = run(["date", "-R"], timeout=5).stdout.strip()
    entry = (f"{m.group(1)} ({m.group(2)}{UPGRADE_VERSION_SUFFIX}) "
             f"{m.group(3)}\n\n  * Rebuilt by the package suite to test an "
             f"upgrade.\n\n -- {maint}  {date}\n\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(entry + old)


def only(directory, pattern):
    found = glob.glob(os.path.join(directory, pattern))
    if len(found) != 1:
        raise StepFailed(f"{pattern} in {directory}: {found}")
    return found[0]


def deb_field(deb, field):
    return run(["dpkg-deb", "--field", deb, field], timeout=10).stdout.strip()


def lintian(paths):
    """lintian --fail-on error,warning; returns its output (tags shown at
    info level too, so the report quotes everything it said)."""
    proc = run(["lintian", "--fail-on", "error,warning", "--display-info",
                *paths], timeout=300, check=False)
    said = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                     if "root privileges is not recommended" not in line)
    if proc.returncode != 0:
        raise StepFailed(f"lintian rc {proc.returncode}:\n{said}")
    return said.strip() or "(no tags)"


def missing_closure(debs, root):
    """Packages of the dependency closure of DEBS that the guest ROOT does
    not have: what apt in the guest must pull."""
    names = set()
    for deb in debs:
        for alt in re.split(r",", deb_field(deb, "Depends")):
            names.add(alt.split("|")[0].split("(")[0].split(":")[0].strip())
    names.discard("")
    closure = run(["apt-cache", "depends", "--recurse", "--no-recommends",
                   "--no-suggests", "--no-conflicts", "--no-breaks",
                   "--no-replaces", "--no-enhances", *sorted(names)],
                  timeout=60).stdout
    wanted = {line.strip() for line in closure.splitlines()
              if line and not line.startswith((" ", "<"))}
    have = installed_in(root)
    return sorted(wanted - have), sorted(names)


def installed_in(root):
    """Names of the packages installed in ROOT (its dpkg status file)."""
    have = set()
    with open(os.path.join(root, "var/lib/dpkg/status"),
              encoding="utf-8") as f:
        for block in f.read().split("\n\n"):
            name = re.search(r"^Package: (\S+)", block, re.M)
            if name and re.search(r"^Status: install ok installed", block,
                                  re.M):
                have.add(name.group(1))
    return have


def make_repo(repo, debs, root):
    """REPO: the packages the guest ROOT lacks, indexed for apt, and each
    of DEBS ({version dir: .deb}) in REPO/version dir."""
    missing, direct = missing_closure(debs.values(), root)
    pool = os.path.join(repo, "pool")
    os.makedirs(pool)
    if missing:
        run(["apt-get", "download", *missing], timeout=300, cwd=pool)
    index = run(["dpkg-scanpackages", "--multiversion", "pool"], timeout=60,
                cwd=repo).stdout
    with open(os.path.join(repo, "Packages"), "w") as f:
        f.write(index)
    for version, deb in debs.items():
        os.makedirs(os.path.join(repo, version))
        shutil.copy2(deb, os.path.join(repo, version))
    return missing, direct


def file_list(root):
    """Every path under ROOT (relative), but the volatile ones."""
    skip = re.compile("|".join(f"(?:{v})" for v in VOLATILE))
    paths = set()
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        for name in dirs + files:
            path = os.path.normpath(os.path.join(rel, name))
            if not skip.match(path + ("/" if name in dirs else "")):
                paths.add(path)
    return paths


class Package:
    """The operator's steps on the guest, in order; each returns what it
    saw and raises StepFailed."""

    def __init__(self, ct, story, versions, root):
        self.ct = ct
        self.st = story
        self.versions = versions
        self.root = root
        self.pool = None
        self.before = None

    def apt(self, *args, timeout=300):
        proc = self.ct.guest(APT_ENV + ["apt-get", "-y", *args],
                             timeout=timeout, check=False)
        if proc.returncode != 0:
            raise StepFailed(f"apt-get {' '.join(args)}: rc "
                             f"{proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def install_deb(self, version_dir, *apt_args):
        """`apt-get install ./epolld_*.deb` in the packages' directory."""
        cmd = ("cd " + os.path.join(REPO, version_dir) + " && exec "
               "apt-get -y " + " ".join(apt_args) + " install ./epolld_*.deb")
        proc = self.ct.guest(APT_ENV + ["sh", "-c", cmd], timeout=300,
                             check=False)
        if proc.returncode != 0:
            raise StepFailed(f"{cmd}: rc {proc.returncode}\n"
                             f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    def dpkg_state(self, pkg):
        proc = self.ct.guest(["dpkg-query", "--show", "--showformat",
                              "${db:Status-Abbrev}${Version}", pkg],
                             check=False)
        return proc.stdout.strip() if proc.returncode == 0 else "absent"

    def state(self, unit):
        return self.st.show(unit, "ActiveState")["ActiveState"]

    def users(self):
        return (self.ct.guest(["getent", "passwd"]).stdout +
                self.ct.guest(["getent", "group"]).stdout)

    def nc(self, data="hello\n"):
        """The host's nc in the guest's network namespace."""
        proc = subprocess.run(
            ["nsenter", "--target", str(self.ct.leader), "--net", "--",
             "nc", "-N", "-w", "5", "127.0.0.1", str(PORT)],
            input=data, capture_output=True, text=True, timeout=15)
        return proc.stdout, proc.returncode

    # steps

    def pristine(self):
        sources = f"deb [trusted=yes] file:{REPO} ./\n"
        self.ct.guest(["sh", "-c", "rm -f /etc/apt/sources.list.d/*"])
        self.ct.write_file("/etc/apt/sources.list", sources)
        self.apt("update", "-qq")
        absent = [p for p in ("libinih1", "procps", "epolld")
                  if self.dpkg_state(p) == "absent"]
        if absent != ["libinih1", "procps", "epolld"]:
            raise StepFailed(f"the guest is not pristine: only {absent} "
                             f"are absent")
        self.before = (file_list(self.root), self.users())
        return (f"apt source '{sources.strip()}' (the guest has no network); "
                f"libinih1, procps, epolld not installed; "
                f"{len(self.before[0])} paths recorded")

    def install(self):
        out = self.install_deb("v1")
        new = re.search(r"NEW packages will be installed:\n((?:  .*\n)+)",
                        out)
        new = new.group(1).split() if new else []
        for pkg in ("epolld", "libinih1", "procps"):
            if pkg not in new:
                raise StepFailed(f"{pkg} not among the NEW packages: {new}"
                                 f"\n{out}")
        auto = self.ct.guest(["apt-mark", "showauto"]).stdout.split()
        if "libinih1" not in auto or "epolld" in auto:
            raise StepFailed(f"apt-mark showauto: {auto}")
        state = self.dpkg_state("epolld")
        if state != f"ii {self.versions[0]}":
            raise StepFailed(f"dpkg state of epolld: {state!r}")
        enabled = self.st.systemctl("is-enabled", "epolld.socket",
                                    "epolld.service",
                                    check=False).stdout.split()
        units = (self.state("epolld.socket"), self.state("epolld.service"))
        if enabled != ["enabled", "disabled"] or units != ("active",
                                                           "inactive"):
            raise StepFailed(f"after install: is-enabled socket/service "
                             f"{enabled}, active {units}")
        return (f"apt pulled {' '.join(sorted(new))}; libinih1 marked auto; "
                f"epolld {self.versions[0]}; epolld.socket enabled+active, "
                f"epolld.service disabled+inactive (starts at the first client)")

    def first_client(self):
        self.cursor = self.st.cursor()
        out, rc = self.nc()
        if (out, rc) != ("Hi!", 0):
            raise StepFailed(f"nc 127.0.0.1 {PORT}: rc {rc}, {out!r}")
        self.st.expect_running()
        status = wait_for(
            "Status: line in systemctl status",
            lambda: re.search(r"^\s*Status: \"(\d+ connections, \d+ replies)\"",
                              self.st.systemctl("status", "epolld",
                                                check=False).stdout, re.M),
            10)
        text = self.st.systemctl("status", "epolld", check=False).stdout
        active = re.search(r"^\s*Active: (.*)$", text, re.M).group(1)
        triggered = re.search(r"^\s*TriggeredBy: (.*)$", text, re.M)
        if not active.startswith("active (running)") or not triggered \
                or "epolld.socket" not in triggered.group(1):
            raise StepFailed(f"systemctl status epolld:\n{text}")
        accepted = self.st.wait_message(
            self.cursor, r"accepted connection #\d+ from 127\.0\.0\.1:\d+")
        closed = self.st.wait_message(
            self.cursor, r"closed connection #\d+ .*")
        return (f"nc got {out!r}; status: Active: {active.split(';')[0]}, "
                f"TriggeredBy: {triggered.group(1).strip()}, "
                f"Status: {status.group(1)!r}; journal: "
                f"{accepted['MESSAGE']!r}, {closed['MESSAGE']!r}")

    def security(self):
        return self.st.security()

    def upgrade(self):
        line = self.st.set_config("server", "idle_timeout", "600")
        edited = self.ct.read_file(CONFIG)
        self.st.expect_running()
        self.pool = Pool(self.ct.leader, PORT)
        idxs = self.pool.open(HELD)
        self.pool.exchange(idxs)
        old_pid = self.st.main_pid()
        cursor = self.st.cursor()
        started = time.monotonic()
        out = self.install_deb("v2", "-o", "Dpkg::Options::=--force-confdef",
                               "-o", "Dpkg::Options::=--force-confold")
        took = time.monotonic() - started
        state = self.dpkg_state("epolld")
        if state != f"ii {self.versions[1]}":
            raise StepFailed(f"dpkg state after the upgrade: {state!r}\n{out}")
        kept = self.ct.read_file(CONFIG)
        leftovers = self.ct.guest(["sh", "-c", "ls /etc/epolld/"]).stdout.split()
        if kept != edited or leftovers != ["epolld.ini"]:
            raise StepFailed(f"/etc/epolld after the upgrade: {leftovers}, "
                             f"edit kept: {kept == edited}")
        self.st.expect_running()
        new_pid = self.st.main_pid()
        exe = self.ct.guest(["readlink", f"/proc/{new_pid}/exe"]).stdout.strip()
        if new_pid in (0, old_pid) or exe != "/usr/sbin/epolld":
            raise StepFailed(f"MainPID {old_pid} -> {new_pid}, exe {exe!r}")
        closed = self.pool.closed(idxs)
        if closed:
            raise StepFailed(f"{len(closed)} of {HELD} held connections "
                             f"closed by the upgrade")
        self.pool.exchange(idxs)
        handed = self.st.wait_message(cursor, r"handed \d+ connection\(s\)")
        adopted = self.st.wait_message(cursor, r"adopted \d+ of \d+ inherited")
        if f"handed {HELD} " not in handed["MESSAGE"] or \
                f"adopted {HELD} of {HELD} " not in adopted["MESSAGE"]:
            raise StepFailed(f"{HELD} held: {handed['MESSAGE']!r}, "
                             f"{adopted['MESSAGE']!r}")
        sock = self.state("epolld.socket")
        if sock != "active":
            raise StepFailed(f"epolld.socket {sock} after the upgrade")
        return (f"{self.versions[0]} -> {self.versions[1]} in {took:.1f}s; "
                f"epolld.ini edited at line {line} kept (no .dpkg-* files); MainPID "
                f"{old_pid} -> {new_pid} ({exe}); {HELD} held connections "
                f"all answered; {handed['MESSAGE']!r}, "
                f"{adopted['MESSAGE']!r}; epolld.socket {sock}")

    def remove(self):
        edited = self.ct.read_file(CONFIG)
        self.apt("remove", "epolld")
        units = (self.state("epolld.service"), self.state("epolld.socket"))
        if units != ("inactive", "inactive"):
            raise StepFailed(f"after remove: service, socket {units}")
        took = self.pool.wait_closed(range(HELD), timeout=10)
        self.pool.close_all()
        try:
            out, rc = self.nc()
        except subprocess.TimeoutExpired:
            out, rc = "timeout", -1
        if rc == 0:
            raise StepFailed(f"port {PORT} still answers after remove: {out!r}")
        binary = self.ct.guest(["test", "-e", "/usr/sbin/epolld"],
                               check=False).returncode
        if binary == 0:
            raise StepFailed("/usr/sbin/epolld is still there")
        if self.ct.read_file(CONFIG) != edited:
            raise StepFailed("the configuration changed at remove")
        state = self.dpkg_state("epolld")
        if not state.startswith("rc"):
            raise StepFailed(f"dpkg state after remove: {state!r}")
        return (f"service and socket inactive; the {HELD} held connections "
                f"closed within {took:.1f}s; port {PORT} refused; "
                f"/usr/sbin/epolld gone; edited {CONFIG} kept; dpkg: {state!r}")

    def purge(self):
        out = self.apt("purge", "--autoremove", "epolld")
        purged = re.search(r"REMOVED:\n((?:  .*\n)+)", out)
        purged = [p.rstrip("*") for p in purged.group(1).split()] \
            if purged else []
        after = file_list(self.root)
        added = sorted(after - self.before[0])
        gone = sorted(self.before[0] - after)
        named = sorted(p for p in after if "epolld" in p and p != ROOTFS_MARK)
        units = self.st.systemctl("list-unit-files", "--no-legend",
                                  "epolld*", check=False).stdout.strip()
        loaded = self.st.systemctl("list-units", "--all", "--no-legend",
                                   "epolld*", check=False).stdout.strip()
        users = self.users()
        problems = []
        if added or gone:
            problems.append(f"file list differs: added {added[:20]}, "
                            f"gone {gone[:20]}")
        if named:
            problems.append(f"paths naming epolld: {named}")
        if units or loaded:
            problems.append(f"units: {units!r} {loaded!r}")
        if users != self.before[1]:
            problems.append("users or groups changed")
        if self.dpkg_state("epolld") != "absent" and \
                not self.dpkg_state("epolld").startswith("un"):
            problems.append(f"dpkg: {self.dpkg_state('epolld')!r}")
        if problems:
            raise StepFailed("; ".join(problems))
        return (f"purged {' '.join(purged)}; /etc/epolld gone; no unit, "
                f"user, group or path of epolld; the file list equals the "
                f"one before the install ({len(after)} paths, volatile "
                f"state excluded)")


def preflight(args):
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "git", "nc",
                 "dpkg-buildpackage", "dpkg-scanpackages", "lintian"):
        if not shutil.which(tool):
            return f"{tool} not found"
    if not os.path.isdir(os.path.join(args.source, ".git")) and \
            not os.path.isfile(os.path.join(args.source, ".git")):
        return f"{args.source} is not a git checkout"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--source", default=os.environ.get(
        "EPOLLD_SOURCE_ROOT", os.path.dirname(os.path.dirname(here))))
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (packages, console log)")
    ap.add_argument("--rebuild-rootfs", action="store_true")
    ap.add_argument("--rootfs-timeout", type=int, default=900)
    args = ap.parse_args()

    code = begin(preflight(args), MACHINE, "package_test.py")
    if code is not None:
        return code
    report = Report()
    work = tempfile.mkdtemp(prefix=f"{MACHINE}-{os.getpid()}-", dir="/var/tmp")
    ct = None
    started = time.monotonic()
    try:
        got = {}

        def build():
            built, note, got["versions"] = clone_and_build(args, work)
            got["built"] = built
            return (f"{note}, version {got['versions'][0]} (meson.build's): "
                    f"dpkg-buildpackage -us -uc ({built['v1'][1]:.0f}s)"
                    f" -> {', '.join(sorted(os.path.basename(p) for p in glob.glob(built['v1'][0] + '/epolld_*')))}"
                    f"; {got['versions'][1]} with -b ({built['v2'][1]:.0f}s)")

        def lint():
            v1 = got["built"]["v1"][0]
            said = lintian([only(v1, "epolld_*.deb"), only(v1, "epolld_*.dsc")])
            info = run(["dpkg-deb", "--info", only(v1, "epolld_*.deb")],
                       timeout=10).stdout
            keep = [line.strip() for line in info.splitlines()
                    if re.match(r"\s*(Version|Installed-Size|Depends):", line)]
            return (f"lintian --fail-on error,warning on the .deb and .dsc: "
                    f"{said!r}; dpkg -I: {'; '.join(keep)}")

        def rootfs():
            got["root"], how = prepare_rootfs(args, GUEST_PACKAGES, CACHE_DIR)
            root = os.path.join(work, "root")
            run(["cp", "-a", "--reflink=auto", got["root"], root], timeout=120)
            os.makedirs(root + REPO, exist_ok=True)
            got["copy"] = root
            return f"{got['root']} ({how}), packages {', '.join(GUEST_PACKAGES)}"

        def repo():
            debs = {v: only(got["built"][v][0], "epolld_*.deb")
                    for v in ("v1", "v2")}
            missing, direct = make_repo(os.path.join(work, "repo"), debs,
                                        got["copy"])
            return (f"epolld depends on {', '.join(direct)}; the guest lacks "
                    f"{', '.join(missing) or 'nothing'} of their closure: "
                    f"downloaded on the host into a file: repository")

        def boot():
            nonlocal ct
            ct = Container(got["copy"], work, MACHINE,
                           [f"--bind-ro={os.path.join(work, 'repo')}:{REPO}"])
            return ct.boot(timeout=90)

        for name, fn in (("build", build), ("lintian", lint),
                         ("rootfs", rootfs), ("repo", repo), ("boot", boot)):
            if not report.step(name, fn):
                if ct and ct.nspawn:
                    log(f"console:\n{ct.console_tail()}")
                raise Abort(f"{name} failed")

        pkg = Package(ct, Story(ct), got["versions"], got["copy"])
        steps = [("pristine", pkg.pristine), ("install", pkg.install),
                 ("first-client", pkg.first_client),
                 ("security", pkg.security), ("upgrade", pkg.upgrade),
                 ("remove", pkg.remove), ("purge", pkg.purge)]
        for name, fn in steps:
            if not report.step(name, fn):
                report.not_run += [n for n, _ in steps[steps.index((name, fn))
                                                       + 1:]]
                if report.not_run:
                    log(f"SKIP {', '.join(report.not_run)}: after {name}")
                break
    except Abort as e:
        log(f"ABORT: {e}")
        report.failed += 1
    finally:
        finish(report, ct, work, args.keep)
    skipped = f", {len(report.not_run)} skipped" if report.not_run else ""
    log(f"package suite took {time.monotonic() - started:.0f}s")
    log(f"{report.passed} passed, {report.failed} failed{skipped}")
    return 0 if report.failed == 0 and not report.not_run else 1


if __name__ == "__main__":
    sys.exit(main())
