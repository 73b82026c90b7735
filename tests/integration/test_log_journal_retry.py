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
import time

from helpers import Client, FakeJournald, wait_until
from launcher import journal_options


def start(epolld, journal_path):
    """The daemon, ready, with stderr a file that JOURNAL_STREAM names."""
    return epolld.start(listen=("127.0.0.1",), level=None, notify=epolld.notify(),
                        **journal_options(journal_path, epolld.workdir / "journal.stderr"))


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
