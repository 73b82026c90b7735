"""The command line and the exit codes: 0 for -V/-h, 64 for usage errors,
78 for a configuration file that cannot be read, 71 when a listen address
cannot be bound."""
import socket

import pytest

from helpers import EX_CONFIG, EX_OK, EX_OSERR, EX_USAGE, free_port
from launcher import run_epolld

USAGE = "Usage: epolld [-c FILE | --config FILE] [-t | --check-config]"


@pytest.mark.parametrize("option", ["-V", "--version"])
def test_version(option):
    r = run_epolld(option)
    assert (r.returncode, r.stdout, r.stderr) == (EX_OK, "epolld 0.1.0\n", "")


@pytest.mark.parametrize("option", ["-h", "--help"])
def test_help_goes_to_stdout(option):
    r = run_epolld(option)
    assert (r.returncode, r.stderr) == (EX_OK, "")
    assert r.stdout.startswith(USAGE + "\n")
    for word in ("--config FILE", "--check-config", "--version", "--help"):
        assert word in r.stdout


@pytest.mark.parametrize("args", [["-x"], ["--bogus"], ["stray"], ["-t", "stray"], ["-c"],
                                  ["--config"]],
                         ids=lambda a: " ".join(a))
def test_usage_errors_exit_64_with_usage_on_stderr(args):
    r = run_epolld(*args)
    assert r.returncode == EX_USAGE, r.stderr
    assert r.stdout == ""
    assert USAGE in r.stderr


def test_stray_argument_is_named():
    r = run_epolld("stray")
    assert r.stderr.startswith("epolld: unexpected argument 'stray'\n")


def test_missing_config_file(tmp_path):
    path = tmp_path / "missing.ini"
    r = run_epolld("-c", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (
        EX_CONFIG, "", f"err: {path}: cannot open: No such file or directory\n")
    r = run_epolld("-t", "-c", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (
        EX_CONFIG, "", f"{path}: cannot open: No such file or directory\n")


def test_unreadable_config_file(tmp_path):
    # Root reads any file whatever its mode; a directory is refused before a
    # read is tried (tests/integration/test_config_file_kind.py: the others).
    r = run_epolld("-c", str(tmp_path))
    assert r.returncode == EX_CONFIG
    assert r.stderr == f"err: {tmp_path}: not a regular file\n"


def test_address_in_use_exits_71_and_names_it(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        free = free_port()
        path = tmp_path / "busy.ini"
        path.write_text(f"[server]\nlisten = 127.0.0.1:{free}\nlisten = 127.0.0.1:{busy}\n")
        r = run_epolld("-c", str(path))
        assert r.returncode == EX_OSERR, r.stderr
        assert f"err: cannot listen on 127.0.0.1:{busy}: Address already in use\n" in r.stderr
        # The holder is untouched: the daemon did not take over its port.
        with socket.create_connection(("127.0.0.1", busy), timeout=2):
            conn, _ = holder.accept()
            conn.close()


def test_address_that_cannot_be_bound_exits_71(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine; nothing is sent to it.
    path = tmp_path / "foreign.ini"
    path.write_text("[server]\nlisten = 192.0.2.1:8001\n")
    r = run_epolld("-c", str(path))
    assert r.returncode == EX_OSERR, r.stderr
    assert "err: cannot listen on 192.0.2.1:8001: Cannot assign requested address\n" in r.stderr
