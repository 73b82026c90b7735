"""Listen addresses: IPv6, several listen lines, "*:PORT" for both families,
and what the start-up lines say about the configuration in force."""
import resource
import signal

from helpers import REPLY, connect, exchange


def test_ipv6_loopback(epolld):
    d = epolld(listen=("[::1]",))
    d.wait_log(rf"^info: listening on \[::1\]:{d.port}$")
    with d.connect() as s:
        assert exchange(s) == REPLY
        cport = s.getsockname()[1]
    d.wait_log(rf"^info: accepted connection #1 from \[::1\]:{cport} \(fd \d+\)$")


def test_two_listen_lines_both_answer(epolld):
    d = epolld(listen=("127.0.0.1", "[::1]", "127.0.0.1"))
    for host, port in zip(("127.0.0.1", r"\[::1\]", "127.0.0.1"), d.ports):
        d.wait_log(rf"^info: listening on {host}:{port}$")
    d.wait_log(r"^info: epolld 0\.1\.0 started: 3 listener\(s\), ")
    for i in range(3):
        with d.connect(i) as s:
            assert exchange(s) == REPLY, f"listener {d.hosts[i]}:{d.ports[i]}"


def test_wildcard_listens_on_both_families(epolld):
    d = epolld(listen=("*",))
    d.wait_log(rf"^info: listening on 0\.0\.0\.0:{d.port}$")
    d.wait_log(rf"^info: listening on \[::\]:{d.port}$")
    d.wait_log(r"^info: epolld 0\.1\.0 started: 2 listener\(s\), ")
    for host in ("127.0.0.1", "::1"):
        with connect(d.port, host) as s:
            assert exchange(s) == REPLY, host
    d.wait_log(r"^info: accepted connection #2 from \[::1\]:\d+ ")


def test_started_line_reports_the_configuration(epolld):
    d = epolld(max_events=7, backlog=33, max_connections=100, idle_timeout=600)
    d.wait_log(r"^info: epolld 0\.1\.0 started: 1 listener\(s\), max_events=7, "
               r"max_connections=100, backlog=33, idle_timeout=600s, log level info$")
    assert "capped" not in d.log()
    with d.connect() as s:
        assert exchange(s) == REPLY


def test_log_level_notice_hides_info_lines(epolld):
    d = epolld(level="notice")
    with d.connect() as s:
        assert exchange(s) == REPLY
    d.signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0
    log = d.log()
    assert "info:" not in log and "debug:" not in log, log
    assert "notice: received SIGTERM, stopping" in log


def test_log_level_debug_logs_each_read(epolld):
    d = epolld(level="debug")
    with d.connect() as s:
        assert exchange(s, b"12345") == REPLY
    d.wait_log(r"^debug: connection #1: read 5 bytes$")


def test_max_connections_is_capped_by_the_descriptor_limit(epolld):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    d = epolld()  # max_connections defaults to 65536
    if hard >= 65536 or hard == resource.RLIM_INFINITY:
        assert "capped" not in d.log()
        return
    m = d.wait_log(rf"^notice: max_connections capped from 65536 to (\d+): "
                   rf"RLIMIT_NOFILE is {hard}$")
    capped = int(m[1])
    # Room is kept for the daemon's own descriptors, but not much.
    assert hard - 64 <= capped < hard
    d.wait_log(rf"^info: epolld 0\.1\.0 started: 1 listener\(s\), max_events=1024, "
               rf"max_connections={capped}, backlog=4096, idle_timeout=0s, log level info$")
