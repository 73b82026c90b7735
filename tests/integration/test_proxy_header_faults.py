"""The PROXY header phase (src/header.c) where the socket does something
odd while a header is half read.

- Setting SO_RCVLOWAT back to 1 after a header that had raised it fails
  (injected: tests/integration/faultinject.c, preloaded): the connection is
  refused, and the reason names the failed setsockopt and its error, not
  "short read" as it did before.
- Readable without a byte more than last time is not proof of a FIN:
  an urgent (MSG_OOB) byte makes tcp_poll() report the socket readable
  below SO_RCVLOWAT, and a peek cannot get past its mark, so the header
  could never complete. It is refused as "urgent data in a PROXY header"
  (it was "closed before the end of its PROXY header", the client still
  connected), at once, so nothing can spin; a real FIN keeps its reason.
"""
import os
import socket
import time

import pytest

from helpers import recv_for, sees_eof, wait_until

SHIM = os.environ.get("EPOLLD_FAULTINJECT", "")
needs_shim = pytest.mark.skipif(not os.path.exists(SHIM),
                                reason="faultinject.so not built (run via meson)")
HEADER = b"PROXY TCP4 198.18.0.10 10.0.0.5 40000 8001\r\n"


def preload(**env):
    asan = os.environ.get("ASAN_OPTIONS", "")
    # the shim comes before the sanitizer runtime in the link order
    return {"LD_PRELOAD": SHIM, "ASAN_OPTIONS": (asan + ":" if asan else "") +
            "verify_asan_link_order=0", **env}


@needs_shim
def test_a_failed_reset_of_rcvlowat_is_named(epolld):
    d = epolld.start(listen=("127.0.0.1",), server={"proxy_protocol": "yes"},
                     env=preload(EPOLLD_FAIL_RCVLOWAT_RESET="1"))
    with d.connect() as c:
        c.sendall(HEADER[:20])  # incomplete: SO_RCVLOWAT raised
        assert recv_for(c, 0.2) == b""
        c.sendall(HEADER[20:] + b"ping")
        assert sees_eof(c)
    d.wait_log(r"^warning: refused connection from 127\.0\.0\.1:\d+ \(fd \d+\): "
               r"setsockopt\(SO_RCVLOWAT\) back to 1 failed: Cannot allocate memory$")
    assert "short read" not in d.log()


REFUSED = r"^warning: refused connection from 127\.0\.0\.1:{} \(fd \d+\): {}$"


def test_urgent_data_in_a_header_is_refused_as_such(epolld):
    d = epolld.start(listen=("127.0.0.1",), server={"proxy_protocol": "yes",
                                                     "proxy_timeout": 30})
    with d.connect() as c, d.connect() as waiting:
        waiting.sendall(HEADER[:14])  # stays half read all along: costs nothing
        c.sendall(HEADER[:14])
        assert recv_for(c, 0.2) == b""
        cpu = d.cpu_seconds()
        c.send(b"!", socket.MSG_OOB)
        d.wait_log(REFUSED.format(c.getsockname()[1], "urgent data in a PROXY header"))
        assert sees_eof(c)
        time.sleep(1.0)
        assert d.cpu_seconds() - cpu < 0.2, "spinning on the urgent byte"
        waiting.sendall(HEADER[14:] + b"x")
        assert recv_for(waiting, 0.5) == b"Hi!"
    assert "closed before the end" not in d.log()


def test_a_fin_in_a_header_is_refused_as_closed(epolld):
    d = epolld.start(listen=("127.0.0.1",), server={"proxy_protocol": "yes",
                                                     "proxy_timeout": 30})
    with d.connect() as c:
        c.sendall(HEADER[:14])
        assert recv_for(c, 0.2) == b""
        c.shutdown(socket.SHUT_WR)
        d.wait_log(REFUSED.format(c.getsockname()[1],
                                  "closed before the end of its PROXY header"))
        assert sees_eof(c)
