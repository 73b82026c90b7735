"""A configuration path that is not a regular file (a FIFO, a device, a
directory, a symlink to one) or is larger than the 1 MiB limit is refused
at once with "FILE: not a regular file" or "FILE: larger than 1048576
bytes": exit 78 at -t and at a start, "reload failed" in a running daemon,
which keeps serving and still stops on SIGTERM. Nothing may block on open()
or read a device that never ends."""
import os
import re
import signal
import time

import pytest

from helpers import EX_CONFIG, EX_OK, exchange
from launcher import run_epolld

SIZE_MAX = 1048576
BOUND = 5.0  # seconds: every verdict here comes in milliseconds


def fifo(tmp_path, name="fifo.ini"):
    path = tmp_path / name
    os.mkfifo(path)
    return path


def symlink(tmp_path, target, name="link.ini"):
    path = tmp_path / name
    path.symlink_to(target)
    return path


KINDS = {
    "fifo": fifo,
    "dev-zero": lambda tmp_path: "/dev/zero",
    "dev-urandom": lambda tmp_path: "/dev/urandom",
    "dev-null": lambda tmp_path: "/dev/null",
    "directory": lambda tmp_path: tmp_path,
    "symlink-to-dev-zero": lambda tmp_path: symlink(tmp_path, "/dev/zero"),
    "symlink-to-fifo": lambda tmp_path: symlink(tmp_path, fifo(tmp_path)),
}


@pytest.mark.parametrize("kind", KINDS)
def test_check_refuses_what_is_not_a_regular_file(tmp_path, kind):
    path = KINDS[kind](tmp_path)
    started = time.monotonic()
    r = run_epolld("-t", "-c", str(path), timeout=BOUND)
    assert (r.returncode, r.stdout, r.stderr) == (EX_CONFIG, "", f"{path}: not a regular file\n")
    assert time.monotonic() - started < BOUND


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "symlink-to-dev-zero"])
def test_start_refuses_what_is_not_a_regular_file(tmp_path, kind):
    path = KINDS[kind](tmp_path)
    r = run_epolld("-c", str(path), timeout=BOUND)
    assert (r.returncode, r.stdout, r.stderr) == (
        EX_CONFIG, "", f"err: {path}: not a regular file\n")


def comments(size):
    """SIZE bytes of comment lines (each well under the line limit)."""
    line = b"#" * 63 + b"\n"
    text = line * (size // len(line))
    return text + b"\n" * (size - len(text))


def test_size_limit_is_inclusive(tmp_path):
    path = tmp_path / "big.ini"
    path.write_bytes(comments(SIZE_MAX))
    r = run_epolld("-t", "-c", str(path), timeout=BOUND)
    assert (r.returncode, r.stderr) == (EX_OK, "")
    path.write_bytes(comments(SIZE_MAX + 1))
    r = run_epolld("-t", "-c", str(path), timeout=BOUND)
    assert (r.returncode, r.stdout, r.stderr) == (
        EX_CONFIG, "", f"{path}: larger than {SIZE_MAX} bytes\n")


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "sparse.ini"
    with open(path, "wb") as f:
        f.truncate(1 << 34)  # 16 GiB of NUL bytes, none on disk
    r = run_epolld("-t", "-c", str(path), timeout=BOUND)
    assert (r.returncode, r.stdout, r.stderr) == (
        EX_CONFIG, "", f"{path}: larger than {SIZE_MAX} bytes\n")


def replace_with(config, make):
    """Puts what MAKE(path) creates in CONFIG's place, atomically."""
    tmp = config.with_name(config.name + ".new")
    make(tmp)
    os.replace(tmp, config)


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero"])
def test_running_daemon_refuses_the_reload_and_keeps_serving(epolld, kind):
    d = epolld()
    old = d.connect()
    assert exchange(old) == b"Hi!"
    if kind == "fifo":
        replace_with(d.config, os.mkfifo)
    else:
        replace_with(d.config, lambda p: p.symlink_to("/dev/zero"))
    refusal = rf"^err: {re.escape(str(d.config))}: not a regular file$"
    for n, (signo, what) in enumerate([(signal.SIGHUP, "reload"), (signal.SIGUSR2, "re-exec"),
                                      (signal.SIGHUP, "reload")], start=1):
        d.signal(signo)
        d.wait_log(refusal, timeout=BOUND, count=n)
        d.wait_log(rf"^err: {what} failed, keeping the previous configuration$", timeout=BOUND,
                   count=2 if n == 3 else 1)
        assert exchange(old, timeout=BOUND) == b"Hi!"
        with d.connect() as new:
            assert exchange(new, timeout=BOUND) == b"Hi!"
    old.close()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(BOUND) == EX_OK
