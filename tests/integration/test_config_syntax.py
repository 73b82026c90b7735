"""Lines the parser once let through or misnamed (issue 14): indented lines,
text after a section header, "*:0", an IPv4-mapped IPv6 address. Each is a
"FILE:LINE: message" error, exit 78, the same with -t as at a start, so a
file that passes -t can start."""
import pytest

from helpers import EX_CONFIG, EX_OK, free_port
from launcher import run_epolld

CONTINUATION = "continuation lines are not allowed; repeat the key"
INDENTED = "indented line (keys and sections must not be indented)"
MAPPED = ("listen: invalid address '[::ffff:127.0.0.1]:{p}': IPv4-mapped address "
          "'::ffff:127.0.0.1' cannot be bound (IPv6 sockets are IPV6_V6ONLY); use 127.0.0.1:PORT")

# (id, file text with {p} for a free port, line of the error, message)
BAD = [
    ("continuation-v4", "[server]\nlisten = 127.0.0.1:{p}\n  127.0.0.2:{p}\n", 3,
     f"indented line continues 'listen' from line 2 ({CONTINUATION})"),
    ("continuation-v6", "[server]\nlisten = 127.0.0.1:{p}\n  [::1]:{p}\n", 3,
     f"indented line continues 'listen' from line 2 ({CONTINUATION})"),
    ("indented-first-key", "[server]\n  max_events = 5\n", 2, INDENTED),
    ("indented-key-at-top", "  max_events = 5\n", 1, INDENTED),
    ("indented-section", "\t[server]\nbacklog = 1\n", 1, INDENTED),
    ("section-junk", "[server] junk\nlisten = 127.0.0.1:{p}\n", 1,
     "unexpected text after [server]: 'junk'"),
    ("section-key-on-same-line", "[log] level = debug\n", 1,
     "unexpected text after [log]: 'level = debug'"),
    ("any-port-zero", "[server]\nlisten = *:0\n", 2,
     "listen: invalid address '*:0': *:0 would bind IPv4 and IPv6 on different ports; "
     "use 0.0.0.0:0 or [::]:0"),
    ("v4-mapped", "[server]\nlisten = [::ffff:127.0.0.1]:{p}\n", 2, MAPPED),
]


def write(tmp_path, name, text, port):
    path = tmp_path / f"{name}.ini"
    path.write_text(text.replace("{p}", str(port)))
    return path


@pytest.mark.parametrize("name,text,line,message", BAD, ids=[c[0] for c in BAD])
def test_check_and_start_refuse_alike(tmp_path, name, text, line, message):
    port = free_port()
    path = write(tmp_path, name, text, port)
    expected = f"{path}:{line}: {message.replace('{p}', str(port))}\n"
    r = run_epolld("-t", "-c", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (EX_CONFIG, "", expected)
    r = run_epolld("-c", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (EX_CONFIG, "", "err: " + expected)


GOOD = """\
[server] ; a comment after the section is fine
  ; so is an indented comment
listen = 127.0.0.1:{p}
\t
[log]\t
level = notice
"""


def test_comments_and_blank_lines_may_be_indented(tmp_path):
    path = write(tmp_path, "good", GOOD, free_port())
    r = run_epolld("-t", "-c", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (EX_OK, f"{path}: configuration is valid\n", "")
