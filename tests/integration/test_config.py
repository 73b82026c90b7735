"""Configuration errors: each bad file is checked with -t (one line on stderr,
exit 78, nothing bound) and by a real start (the same line logged as an
error, exit 78, nothing bound), and the exact "FILE:LINE: message" text is
compared. Valid files pass -t without binding anything."""
import re
import socket

import pytest

from helpers import EX_CONFIG, EX_OK, free_port, listening_ports
from launcher import run_epolld

FORMS = "expected A.B.C.D:PORT, [IPv6]:PORT or *:PORT"
LEVELS = "expected emerg, alert, crit, err, warning, notice, info or debug"

# (id, file text with {p} for a free port, line of the error, message)
BAD = [
    ("unknown-section", "[server]\nlisten = 127.0.0.1:{p}\n\n[foo]\n", 4,
     "unknown section [foo]"),
    ("unknown-section-case", "[Server]\nbacklog = 1\n", 1, "unknown section [Server]"),
    ("unknown-key", "[server]\nlisten = 127.0.0.1:{p}\nfoo = 1\n", 3,
     "unknown key 'foo' in section [server]"),
    ("key-in-wrong-section", "[log]\nbacklog = 10\n", 2, "unknown key 'backlog' in section [log]"),
    ("duplicate-key", "[server]\nlisten = 127.0.0.1:{p}\nbacklog = 10\nbacklog = 20\n", 4,
     "duplicate key 'backlog' (first set on line 3)"),
    ("duplicate-level", "[log]\nlevel = info\n; again\nlevel = debug\n", 4,
     "duplicate key 'level' (first set on line 2)"),
    ("empty-value", "[server]\nlisten = 127.0.0.1:{p}\nbacklog =\n", 3, "backlog: empty value"),
    ("not-a-number", "[server]\nmax_events = abc\n", 2, "max_events: 'abc' is not a number"),
    ("negative", "[server]\nbacklog = -1\n", 2, "backlog: '-1' is not a number"),
    ("trailing-junk", "[server]\nidle_timeout = 10s\n", 2, "idle_timeout: '10s' is not a number"),
    ("max-events-zero", "[server]\nmax_events = 0\n", 2, "max_events: 0 is out of range (1..65536)"),
    ("max-events-high", "[server]\nmax_events = 65537\n", 2,
     "max_events: 65537 is out of range (1..65536)"),
    ("backlog-high", "[server]\nbacklog = 65536\n", 2, "backlog: 65536 is out of range (1..65535)"),
    ("max-connections-zero", "[server]\nmax_connections = 0\n", 2,
     "max_connections: 0 is out of range (1..1048576)"),
    ("max-connections-huge", "[server]\nmax_connections = 99999999999999999999\n", 2,
     "max_connections: 99999999999999999999 is out of range (1..1048576)"),
    ("idle-timeout-high", "[server]\nidle_timeout = 604801\n", 2,
     "idle_timeout: 604801 is out of range (0..604800)"),
    ("listen-no-port", "[server]\nlisten = x\n", 2,
     f"listen: invalid address 'x': missing ':PORT' ({FORMS})"),
    ("listen-name", "[server]\nlisten = localhost:80\n", 2,
     f"listen: invalid address 'localhost:80': invalid IPv4 address 'localhost' "
     f"({FORMS}; names are not resolved)"),
    ("listen-port-range", "[server]\nlisten = 127.0.0.1:65536\n", 2,
     "listen: invalid address '127.0.0.1:65536': port '65536' is out of range (0..65535)"),
    ("listen-v6-no-brackets", "[server]\nlisten = ::1:80\n", 2,
     "listen: invalid address '::1:80': IPv6 addresses need brackets, as in [::1]:PORT"),
    ("listen-bad-v6", "[server]\nlisten = [::g]:80\n", 2,
     "listen: invalid address '[::g]:80': invalid IPv6 address '::g'"),
    ("listen-duplicate", "[server]\nlisten = 127.0.0.1:{p}\n# comment\nlisten = 127.0.0.1:{p}\n", 4,
     "listen: duplicate address '127.0.0.1:{p}' (also on line 2)"),
    ("listen-duplicate-wildcard", "[server]\nlisten = [::]:{p}\nlisten = *:{p}\n", 3,
     "listen: duplicate address '*:{p}' (also on line 2)"),
    ("unknown-level", "[log]\nlevel = loud\n", 2, f"level: unknown level 'loud' ({LEVELS})"),
    ("key-outside-section", "x = 1\n[server]\n", 1, "key 'x' outside of any section"),
    ("syntax-error", "[server]\nlisten = 127.0.0.1:{p}\ngarbage\n", 3,
     "syntax error (expected [section], key = value or a comment)"),
    ("unclosed-section", "[server\n", 1,
     "syntax error (expected [section], key = value or a comment)"),
    ("line-too-long", "[server]\n# " + "x" * 300 + "\nbacklog = 1\n", 2,
     "line too long (at most 199 characters)"),
    ("indented-continuation", "[server]\nbacklog = 5\n  max_events = 5\n", 3,
     "indented line continues 'backlog' from line 2 (keys must not be indented)"),
    ("first-error-wins", "[server]\nlisten = 127.0.0.1:{p}\nmax_events = 0\nfoo = 1\n[bar]\n", 3,
     "max_events: 0 is out of range (1..65536)"),
]


def write(tmp_path, name, text, port):
    path = tmp_path / f"{name}.ini"
    path.write_text(text.replace("{p}", str(port)))
    return path


@pytest.mark.parametrize("name,text,line,message", BAD, ids=[c[0] for c in BAD])
def test_bad_config_with_check_option(tmp_path, name, text, line, message):
    port = free_port()
    path = write(tmp_path, name, text, port)
    r = run_epolld("-t", "-c", str(path))
    expected = f"{path}:{line}: {message.replace('{p}', str(port))}\n"
    assert (r.returncode, r.stdout, r.stderr) == (EX_CONFIG, "", expected)


@pytest.mark.parametrize("name,text,line,message", BAD, ids=[c[0] for c in BAD])
def test_bad_config_at_start(tmp_path, name, text, line, message):
    port = free_port()
    path = write(tmp_path, name, text, port)
    r = run_epolld("-c", str(path))
    expected = f"err: {path}:{line}: {message.replace('{p}', str(port))}\n"
    assert (r.returncode, r.stdout, r.stderr) == (EX_CONFIG, "", expected)


GOOD = """\
; a comment
# another comment

[server]
listen = 127.0.0.1:{p}
listen = [::1]:{p}
max_events = 1          ; inline comment
backlog = 65535
max_connections = 1048576
idle_timeout = 0

[log]
level = debug
"""


def test_valid_config_passes_check_and_binds_nothing(tmp_path):
    # The port is taken: -t must not even try to bind it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = write(tmp_path, "good", GOOD, port)
        r = run_epolld("--check-config", "--config", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (EX_OK, f"{path}: configuration is valid\n", "")


@pytest.mark.parametrize("value", ["emerg", "alert", "crit", "err", "warning", "notice", "info",
                                   "debug"])
def test_every_log_level_is_accepted(tmp_path, value):
    path = write(tmp_path, value, f"[log]\nlevel = {value}\n", 0)
    r = run_epolld("-t", "-c", str(path))
    assert (r.returncode, r.stderr) == (EX_OK, "")


@pytest.mark.parametrize("key,low,high", [("max_events", 1, 65536), ("backlog", 1, 65535),
                                          ("max_connections", 1, 1048576),
                                          ("idle_timeout", 0, 604800)])
def test_range_limits_are_inclusive(tmp_path, key, low, high):
    for value in (low, high):
        path = write(tmp_path, f"{key}-{value}", f"[server]\n{key} = {value}\n", 0)
        r = run_epolld("-t", "-c", str(path))
        assert (r.returncode, r.stderr) == (EX_OK, ""), f"{key} = {value}"


def test_nothing_is_bound_when_a_later_line_is_bad(tmp_path):
    port = free_port()
    path = write(tmp_path, "late", "[server]\nlisten = 127.0.0.1:{p}\n\n[log]\nlevel = loud\n", port)
    r = run_epolld("-c", str(path))
    assert r.returncode == EX_CONFIG
    assert "listening on" not in r.stderr
    assert port not in listening_ports()


def test_line_length_limit_matches_its_message(tmp_path):
    """The error states the longest line allowed; that length must pass and one
    more character must fail with the same message."""
    path = write(tmp_path, "long", "[server]\n#" + "x" * 400 + "\n", 0)
    r = run_epolld("-t", "-c", str(path))
    assert r.returncode == EX_CONFIG
    m = re.fullmatch(rf"{re.escape(str(path))}:2: line too long \(at most (\d+) characters\)\n",
                     r.stderr)
    assert m, r.stderr
    limit = int(m[1])
    for length, last in ((limit, False), (limit, True), (limit + 1, False), (limit + 1, True)):
        # A comment line of exactly LENGTH characters, with or without a
        # following line (the last line of a file may lack its newline).
        text = "[server]\n" + "#" * length + ("" if last else "\nbacklog = 1\n")
        path = write(tmp_path, f"len{length}{last}", text, 0)
        r = run_epolld("-t", "-c", str(path))
        where = f"a {length}-character line{' at the end' if last else ''}"
        if length <= limit:
            assert (r.returncode, r.stderr) == (EX_OK, ""), where
        else:
            assert (r.returncode, r.stderr) == (
                EX_CONFIG, f"{path}:2: line too long (at most {limit} characters)\n"), where


@pytest.mark.parametrize("tail", ["\n", "\nmax_events = 2\n", ""],
                         ids=["newline", "more-lines", "last-line-without-newline"])
def test_nul_byte_is_rejected_wherever_the_line_is(tmp_path, tail):
    path = tmp_path / "nul.ini"
    path.write_bytes(b"[server]\nbacklog = 1\0junk" + tail.encode())
    r = run_epolld("-t", "-c", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (EX_CONFIG, "", f"{path}:2: NUL byte in line\n")
