"""haproxy.py: the shipped conf/haproxy.cfg, readied for the test network,
and HAProxy's runtime API (the stats socket) to read UP and DOWN.

The copy differs from the shipped file only on the lines marked
`# ADDRESS`: the stats socket's path and the balancer's and backends'
addresses. If the file's shape changes (a marked line added, removed or
rewritten, a directive the fleet relies on gone), readied() fails, so the
test cannot quietly run something other than what is shipped.
"""

import csv
import io
import socket

MARK = "# ADDRESS"
SHIPPED_ADDRESSES = {
    "stats socket /run/haproxy/admin.sock mode 660 level admin":
        "stats socket {sock} mode 660 level admin",
    "bind 192.0.2.2:8001": "bind {balancer}:8001",
    "server epolld1 192.0.2.11:8001": "server epolld1 {b1}:8001",
    "server epolld2 192.0.2.12:8001": "server epolld2 {b2}:8001",
    "server epolld3 192.0.2.13:8001": "server epolld3 {b3}:8001",
}
# What the fleet relies on, line by line (comments and spacing aside).
REQUIRED = [
    "mode tcp",
    "timeout client 1h",
    "timeout server 1h",
    "retries 2",
    "option redispatch 1",
    "balance leastconn",
    "option tcp-check",
    r"tcp-check send ping\r\n",
    "tcp-check expect string Hi!",
    "default-server send-proxy-v2 check inter 2s fastinter 500ms fall 2 rise 2",
]
BACKEND, SERVERS = "epolld", ("epolld1", "epolld2", "epolld3")


class ShapeError(AssertionError):
    pass


def _directive(line):
    return " ".join(line.split("#", 1)[0].split())


def readied(shipped_text, **addresses):
    """The shipped text with its marked addresses replaced."""
    lines = shipped_text.splitlines(keepends=True)
    directives = [_directive(line) for line in lines]
    for need in REQUIRED:
        if need not in directives:
            raise ShapeError(f"conf/haproxy.cfg: no line '{need}' any more")
    marked = [i for i, line in enumerate(lines) if line.rstrip().endswith(MARK)]
    if sorted(directives[i] for i in marked) != sorted(SHIPPED_ADDRESSES):
        raise ShapeError("conf/haproxy.cfg: the lines marked ADDRESS are not "
                         f"{sorted(SHIPPED_ADDRESSES)}")
    for i in marked:
        new = SHIPPED_ADDRESSES[directives[i]].format(**addresses)
        lines[i] = lines[i].replace(directives[i], new, 1)
        if _directive(lines[i]) != new:
            raise ShapeError(f"conf/haproxy.cfg: cannot rewrite line {i + 1}: {lines[i]!r}")
    return "".join(lines)


def command(sock_path, cmd, timeout=5.0):
    """One runtime API command; its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(cmd.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks).decode()
            chunks.append(b)


def servers(sock_path):
    """{server name: its `show stat` row as a dict} for the epolld backend."""
    text = command(sock_path, "show stat")
    if not text.startswith("# "):
        raise AssertionError(f"show stat: unexpected answer {text[:200]!r}")
    rows = csv.DictReader(io.StringIO(text[2:]))
    return {r["svname"]: r for r in rows if r["pxname"] == BACKEND and r["svname"] in SERVERS}


def all_up(sock_path):
    """True once every server is UP after a passed check (L7OK)."""
    st = servers(sock_path)
    return len(st) == len(SERVERS) and all(
        r["status"] == "UP" and r["check_status"] == "L7OK" for r in st.values())
