"""The journal back end (src/log.c): when JOURNAL_STREAM names stderr the
daemon sends native entries; when journald is not there (no socket, as on
this test machine), it must fall back to stderr lines without losing any,
and serve as usual."""
import os

import pytest

from helpers import Client, free_port, hi

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def stderr_file(epolld):
    path = epolld.workdir / "journal-stream.stderr"
    path.touch()
    st = os.stat(path)
    return path, f"{st.st_dev}:{st.st_ino}"


@pytest.mark.skipif(os.path.exists(JOURNAL_SOCKET), reason="journald is running here")
def test_journal_stream_without_journald_falls_back_to_stderr(epolld):
    path, stream = stderr_file(epolld)
    port = free_port()
    n = epolld.notify()  # readiness from READY=1, not from a log line
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{port}"]), env={"JOURNAL_STREAM": stream},
                 stderr=path, notify=n)
    with Client(port) as c:
        c.ask()
        c.ask()
    d.reload(n)
    assert hi(port) == b"Hi!"
    assert d.stop() == 0
    lines = d.lines()
    for needle in (f"info: listening on 127.0.0.1:{port}", " started: ",
                   "info: accepted connection #1 from 127.0.0.1:",
                   "info: closed connection #1 (closed by peer) after 2 replies",
                   "notice: reloaded configuration from ", "notice: received SIGTERM, stopping",
                   "notice: stopping: closing 0 connection(s); 2 accepted, 3 replies in all"):
        assert sum(needle in l for l in lines) == 1, (needle, lines)
    # the first line, whose journal send failed, is not lost either
    assert lines[0].split(": ", 1)[0] in ("info", "notice", "warning"), lines


@pytest.mark.skipif(os.path.exists(JOURNAL_SOCKET), reason="journald is running here")
def test_journal_stream_config_error_still_reported(epolld):
    """Even the earliest error (the config, before anything is set up)."""
    path, stream = stderr_file(epolld)
    conf = epolld.config(listen=[f"127.0.0.1:{free_port()}"], max_events=0)
    d = epolld.start(conf, env={"JOURNAL_STREAM": stream}, stderr=path, wait=False)
    assert d.wait_exit() == 78
    assert f"err: {conf}:3: max_events: 0 is out of range (1..65536)" in d.lines()


@pytest.mark.parametrize("stream", ["1:2", "garbage", ""])
def test_journal_stream_not_ours_means_stderr(epolld, stream):
    port = free_port()
    d = epolld.start(epolld.config(listen=[f"127.0.0.1:{port}"]), env={"JOURNAL_STREAM": stream})
    assert hi(port) == b"Hi!"
    d.wait_text("closed connection #1 ")
    assert d.stop() == 0
