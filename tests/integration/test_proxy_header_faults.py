"""The PROXY header phase (src/header.c) where the socket does something
odd while a header is half read.

- Setting SO_RCVLOWAT back to 1 after a header that had raised it fails
  (injected: tests/integration/faultinject.c, preloaded): the connection is
  refused, and the reason names the failed setsockopt and its error, not
  "short read" as it did before.
"""
import os

import pytest

from helpers import recv_for, sees_eof

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
