"""Journal fields with the PROXY protocol (src/conn.c, src/logsink.c): the
accept and close entries of a connection that came through a balancer
carry the client (REMOTE_ADDR=, REMOTE_PORT=, from the header) and the
balancer (PROXY_ADDR=, PROXY_PORT=), the close also REPLIES= and
DURATION_USEC=; a health check (v2 LOCAL) is at priority 7 (debug). Every
other event an operator looks for has its own EPOLLD_EVENT= value: start,
listen, refuse, reload-applied, reload-refused (with REASON=), stop.

A fake journald: a datagram socket that the daemon finds at
/run/systemd/journal/socket in its own mount namespace, with stderr a file
that JOURNAL_STREAM names (as in test_log_journal_retry.py).
"""
import os
import re
import socket
import struct
import subprocess
import time

import pytest

from sdhelpers import BIN, free_port, sd, wait_until  # noqa: F401

NAMESPACE = ('[ -d /run/systemd ] || exit 97; '
             'mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && '
             'ln -s "$FAKE_JOURNAL" /run/systemd/journal/socket && exec "$@"')
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def can_unshare():
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not can_unshare(), reason="needs unshare -m (root)")


def parse_entry(data):
    """journald's native protocol: KEY=VALUE\\n, or KEY\\n<le64 size>VALUE\\n."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k, (size,) = line, struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + size]
            i = nl + 10 + size
        fields[k.decode()] = v.decode()
    return fields


class FakeJournald:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.entries = []

    def find(self, **want):
        while True:
            try:
                self.entries.append(parse_entry(self.sock.recv(65536)))
            except BlockingIOError:
                break
        found = [e for e in self.entries if all(e.get(k) == v for k, v in want.items())]
        return found[0] if len(found) == 1 else None

    def wait(self, **want):
        return wait_until(lambda: self.find(**want), what=f"one entry with {want}")


def v2(src, sport, dst="10.0.0.5", dport=8001):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


@pytest.fixture
def daemon(sd):
    port = free_port()
    path = sd.workdir / "journal.sock"
    journal = FakeJournald(str(path))
    err = sd.workdir / "journal.stderr"
    err.touch()
    st = os.stat(err)
    conf = sd.config(listen=[f"127.0.0.1:{port}"], log_level="info", proxy_protocol="yes")
    env = sd.env({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "FAKE_JOURNAL": str(path)})
    with open(err, "ab") as f:
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                                 NAMESPACE, "sh", BIN, "-c", conf],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                                env=env)
    try:
        journal.wait(EPOLLD_EVENT="start")
        yield proc, journal, port, conf, err
    finally:
        proc.terminate()
        proc.wait(10)
        journal.sock.close()


def test_accept_and_close_name_the_client_and_the_balancer(daemon):
    proc, journal, port, _, err = daemon
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(v2("198.18.0.10", 40000) + b"ping\r\n")
        assert s.recv(3) == b"Hi!"
        balancer_port = str(s.getsockname()[1])
        time.sleep(0.2)
    accept = journal.wait(EPOLLD_EVENT="accept")
    close = journal.wait(EPOLLD_EVENT="close")
    for e in (accept, close):
        assert (e["REMOTE_ADDR"], e["REMOTE_PORT"]) == ("198.18.0.10", "40000"), e
        assert (e["PROXY_ADDR"], e["PROXY_PORT"]) == ("127.0.0.1", balancer_port), e
        assert (e["CONNECTION_ID"], e["PRIORITY"]) == ("1", "6"), e
    assert re.fullmatch(rf"accepted connection #1 from 198\.18\.0\.10:40000 via "
                        rf"127\.0\.0\.1:{balancer_port} \(PROXY v2, fd \d+\)", accept["MESSAGE"])
    assert close["REPLIES"] == "1"
    usec = int(close["DURATION_USEC"])
    assert 200_000 <= usec < 5_000_000, close
    assert re.fullmatch(rf"closed connection #1 \(closed by peer\) after 1 replies in "
                        rf"{usec // 1_000_000}\.{usec // 1000 % 1000:03d} s; client "
                        rf"198\.18\.0\.10:40000 via 127\.0\.0\.1:{balancer_port} \(fd \d+\)",
                        close["MESSAGE"]), close
    assert err.read_text() == ""


def test_health_check_is_debug_and_refusals_are_events(daemon):
    proc, journal, port, _, _ = daemon
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(SIG + bytes([0x20, 0, 0, 0]) + b"ping\r\n")
        assert s.recv(3) == b"Hi!"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        peer_port = str(s.getsockname()[1])
        s.settimeout(5)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    refused = journal.wait(EPOLLD_EVENT="refuse")
    assert (refused["REMOTE_ADDR"], refused["REMOTE_PORT"]) == ("127.0.0.1", peer_port)
    assert refused["REASON"] == "no PROXY protocol header"
    assert refused["PRIORITY"] == "4"
    time.sleep(0.2)
    assert journal.find(EPOLLD_EVENT="accept") is None  # level info: the health check is debug


def test_operator_events(daemon):
    proc, journal, port, conf, _ = daemon
    assert journal.wait(EPOLLD_EVENT="listen")["MESSAGE"] == f"listening on 127.0.0.1:{port}"
    proc.send_signal(1)
    journal.wait(EPOLLD_EVENT="reload-applied")
    with open(conf, "a") as f:
        f.write("[server]\n")  # a second [server] section: duplicate keys follow
        f.write("proxy_timeout = 99\n")
    proc.send_signal(1)
    refused = journal.wait(EPOLLD_EVENT="reload-refused")
    assert refused["REASON"].endswith("proxy_timeout: 99 is out of range (1..60)"), refused
    proc.terminate()
    assert proc.wait(10) == 0
    assert journal.wait(EPOLLD_EVENT="stop")["REASON"] == "TERM"
