"""The native journal back end survives a failed send (src/logsink.c).

A fake journald: a datagram socket that the daemon finds at
/run/systemd/journal/socket inside its own mount namespace (a tmpfs on
/run there, holding a symlink to our socket; /run rather than
/run/systemd, which a container without systemd may not have), with stderr a file
that JOURNAL_STREAM names. The fake journald goes away (its socket file
stays: sends fail with ECONNREFUSED, as while journald restarts), and comes
back. The entries logged meanwhile go to stderr, with one warning; once the
retry interval (1 s) has passed the entries are native again, with their
EPOLLD_EVENT=, REMOTE_ADDR= and CONNECTION_ID= fields.
"""
import os
import socket
import struct
import time

from helpers import Client, wait_until
from launcher import mount_namespace

# In its own mount namespace the daemon sees our socket as journald's.
NAMESPACE = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
             'ln -s "$FAKE_JOURNAL" /run/systemd/journal/socket && exec "$@"')


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
            assert data[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[k.decode()] = v.decode()
    return fields


class FakeJournald:
    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.entries = []

    def poll(self):
        while True:
            try:
                self.entries.append(parse_entry(self.sock.recv(65536)))
            except BlockingIOError:
                return self.entries

    def find(self, pred):
        return next((e for e in self.poll() if pred(e)), None)

    def close(self):
        self.sock.close()  # the socket file stays: sends are refused


def start(epolld, journal_path):
    """The daemon, ready, with stderr a file that JOURNAL_STREAM names."""
    wrapper = mount_namespace(NAMESPACE)
    err = epolld.workdir / "journal.stderr"
    err.touch()
    st = os.stat(err)
    return epolld.start(listen=("127.0.0.1",), level=None, notify=epolld.notify(), stderr=err,
                        env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                             "FAKE_JOURNAL": str(journal_path)},
                        wrapper=wrapper)


def one_client(port):
    with Client(port) as c:
        c.ask()


def test_journal_is_tried_again_after_a_failed_send(epolld):
    path = epolld.workdir / "journal.sock"
    j = FakeJournald(str(path))
    d = start(epolld, path)
    port, err = d.port, d.log_path
    try:
        wait_until(lambda: j.find(lambda e: e["MESSAGE"] == f"listening on 127.0.0.1:{port}"),
                   what="the first entries in the journal")
        assert err.read_text() == ""

        j.close()  # journald is gone: the next send fails
        one_client(port)
        wait_until(lambda: "info: closed connection #1 " in err.read_text(),
                   what=f"the lines in stderr meanwhile:\n{err.read_text()}")
        lines = err.read_text().splitlines()
        assert lines[0] == ("warning: journal send failed: Connection refused; "
                            "writing to stderr, retrying every 1000 ms"), lines
        assert lines[1].startswith("info: accepted connection #1 from 127.0.0.1:"), lines

        j = FakeJournald(str(path))  # journald is back
        back = time.monotonic()
        entry, n = None, 1
        while entry is None and time.monotonic() - back < 5.0:
            n += 1
            one_client(port)
            time.sleep(0.05)
            entry = j.find(lambda e: e.get("EPOLLD_EVENT") == "accept")
        assert entry is not None, f"no native entry 5 s after journald came back:\n{err.read_text()}"
        took = time.monotonic() - back
        cid = entry["CONNECTION_ID"]
        assert entry["MESSAGE"].startswith(f"accepted connection #{cid} from 127.0.0.1:"), entry
        assert entry["REMOTE_ADDR"] == "127.0.0.1"
        assert entry["REMOTE_PORT"].isdigit()
        assert entry["PRIORITY"] == "6"
        assert entry["SYSLOG_IDENTIFIER"] == "epolld"
        assert 0.5 <= took <= 3.0, took
        closed = wait_until(lambda: j.find(lambda e: e.get("EPOLLD_EVENT") == "close"
                                           and e["CONNECTION_ID"] == cid))
        assert closed["REPLIES"] == "1"
        # Every line in between is in stderr, exactly once: none is lost.
        text = err.read_text()
        for i in range(1, int(cid)):
            assert text.count(f"info: accepted connection #{i} from") == 1, (i, text)
    finally:
        assert d.stop() == 0
