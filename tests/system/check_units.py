#!/usr/bin/python3
"""Check the systemd units as `meson install` lays them out.

Installs the build into a scratch DESTDIR, then checks what an operator
would get: both units installed, ExecStart= naming the installed binary and
configuration, the socket's address matching the shipped configuration,
`systemd-analyze verify` clean, and `systemd-analyze security` within
bounds; the template units (epolld@.service, epolld@.socket) the same,
and differing from the plain ones only in the lines that make them
instances (so a change to one reaches the other). The one non-obvious idea: verify checks that ExecStart= exists on
this machine, so it runs on copies of the installed units whose ExecStart=
is rewritten to point into DESTDIR (`--root=DESTDIR` would also demand
sysinit.target and kill(1) inside DESTDIR). Exit 77 (skip) when the build
was configured with -Dsystemdsystemunitdir=no.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

# See boot_test.py: the floor for this unit on systemd 252 without an IP
# address allow list or a RootDirectory= is 1.1.
MAX_EXPOSURE = 1.0
UNITS = ("epolld.service", "epolld.socket", "epolld@.service", "epolld@.socket")
# What a template may add to its plain unit's lines (and nothing else may
# differ, comments aside): the instance in Description=, the instance name
# for the log, and the shared port.
TEMPLATE_ONLY = {
    "epolld@.service": [r"Description=epolld TCP greeting daemon \(instance %i\)",
                        r"Environment=EPOLLD_INSTANCE=%i"],
    "epolld@.socket": [r"Description=epolld TCP greeting daemon socket \(instance %i\)",
                       r"ReusePort=yes"],
}


class CheckFailed(Exception):
    pass


def run(cmd, timeout=120):
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def find_units(destdir):
    found = {}
    for dirpath, _, filenames in os.walk(destdir):
        for name in filenames:
            if name in UNITS:
                found.setdefault(name, []).append(os.path.join(dirpath, name))
    return found


def unit_values(path, key):
    """Values of KEY= in a unit file (no continuation lines in ours)."""
    values = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith(key + "="):
                values.append(line[len(key) + 1:])
    return values


def exec_argv(path, key):
    values = unit_values(path, key)
    if len(values) != 1:
        raise CheckFailed(f"{path}: expected one {key}=, found {len(values)}")
    return shlex.split(values[0])


def check_install(destdir, units):
    service = units["epolld.service"]
    argv = exec_argv(service, "ExecStart")
    binary = argv[0]
    if not os.path.isabs(binary):
        raise CheckFailed(f"ExecStart= binary {binary} is not absolute")
    if not os.access(destdir + binary, os.X_OK):
        raise CheckFailed(f"ExecStart= names {binary}, not installed in DESTDIR")
    if "-c" not in argv or argv.index("-c") + 1 >= len(argv):
        raise CheckFailed(f"ExecStart= passes no -c FILE: {argv}")
    config = argv[argv.index("-c") + 1]
    if not os.path.isfile(destdir + config):
        raise CheckFailed(f"ExecStart= reads {config}, not installed in DESTDIR")
    print(f"ok: ExecStart= runs installed {binary} -c {config}")
    return binary, config


def check_listen_matches(destdir, units, config):
    # Not configparser: `listen` may be repeated, one socket each.
    listen = []
    section = None
    with open(destdir + config, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]").strip()
            elif section == "server" and re.match(r"listen\s*=", line):
                listen.append(line.split("=", 1)[1].split(";")[0].strip())
    streams = unit_values(units["epolld.socket"], "ListenStream")
    missing = [s for s in streams if s not in listen]
    if not streams or missing:
        raise CheckFailed(f"socket ListenStream={streams} vs config listen={listen}")
    print(f"ok: ListenStream={' '.join(streams)} matches [server] listen")


def directives(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def check_templates(units):
    """A template is its plain unit plus TEMPLATE_ONLY, minus Description=."""
    for template, extra in TEMPLATE_ONLY.items():
        plain = [d for d in directives(units[template.replace("@", "")])
                 if not d.startswith("Description=")]
        lines = directives(units[template])
        rest = [d for d in lines if not any(re.fullmatch(x, d) for x in extra)]
        missing = [x for x in extra if not any(re.fullmatch(x, d) for d in lines)]
        if rest != plain or missing:
            raise CheckFailed(f"{template} is not {template.replace('@', '')} plus {extra}: "
                              f"missing {missing}, differs in "
                              f"{sorted(set(rest) ^ set(plain))}")
        print(f"ok: {template} = {template.replace('@', '')} + {', '.join(extra)}")


def rewritten_copies(destdir, units, scratch):
    """Copies of the units whose Exec*= binaries point into DESTDIR."""
    paths = []
    for name, path in units.items():
        with open(path, encoding="utf-8") as f:
            text = f.read()

        def into_destdir(m):
            binary = m.group(2)
            if os.path.exists(destdir + binary):
                binary = destdir + binary
            return m.group(1) + binary

        text = re.sub(r"^(Exec[A-Za-z]*=[-@:+!]*)(/\S+)", into_destdir, text,
                      flags=re.M)
        copy = os.path.join(scratch, name.replace("@.", "@1."))
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text)
        paths.append(copy)
    return paths


def check_verify(copies):
    rc, out = run(["systemd-analyze", "verify", *copies])
    if rc != 0 or out.strip():
        raise CheckFailed(f"systemd-analyze verify (rc {rc}):\n{out}")
    print("ok: systemd-analyze verify is clean")


def check_security(copies):
    for service in [c for c in copies if c.endswith(".service")]:
        check_security_of(service)


def check_security_of(service):
    rc, out = run(["systemd-analyze", "security", "--offline=true",
                   "--no-pager", service])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    if not m:
        raise CheckFailed(f"no exposure level in (rc {rc}):\n{out}")
    for line in out.splitlines():
        if line.startswith("✗"):
            print("  " + re.sub(r"\s{2,}", "  ", line))
    score = float(m.group(1))
    if score > MAX_EXPOSURE:
        raise CheckFailed(f"exposure {score} > {MAX_EXPOSURE}")
    print(f"ok: systemd-analyze security {os.path.basename(service)}: exposure {score} "
          f"<= {MAX_EXPOSURE}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-root", required=True)
    ap.add_argument("--meson", default="meson")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="epolld-units-") as scratch:
        destdir = os.path.join(scratch, "destdir")
        rc, out = run([args.meson, "install", "-C", args.build_root,
                       "--destdir", destdir, "--no-rebuild", "--quiet"])
        if rc != 0:
            print(f"FAIL: meson install --destdir (rc {rc}):\n{out}")
            return 1
        found = find_units(destdir)
        if not found:
            print("SKIP: no units installed (-Dsystemdsystemunitdir=no?)")
            return 77
        units = {}
        for name in UNITS:
            paths = found.get(name, [])
            if len(paths) != 1:
                print(f"FAIL: {name} installed {len(paths)} times: {paths}")
                return 1
            units[name] = paths[0]
            print(f"ok: {name} installed as {paths[0][len(destdir):]}")
        try:
            _, config = check_install(destdir, units)
            check_listen_matches(destdir, units, config)
            check_templates(units)
            copies = rewritten_copies(destdir, units, scratch)
            check_verify(copies)
            check_security(copies)
        except CheckFailed as e:
            print(f"FAIL: {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
