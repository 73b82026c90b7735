"""A STATUS= timer that fails to arm is armed again (src/notify.c).

timerfd_settime() does not fail on a healthy system, so the failure is
injected: tests/integration/faultinject.c, preloaded, fails the first
one-shot 1 s arm, which is the STATUS= timer's (idle_timeout is off). The
daemon must log it and arm the timer on a later loop turn; before the fix
it took the failed arm for an armed timer and never sent STATUS= again.
"""
import os

import pytest

from helpers import Client

SHIM = os.environ.get("EPOLLD_FAULTINJECT", "")


@pytest.mark.skipif(not os.path.exists(SHIM), reason="faultinject.so not built (run via meson)")
def test_status_after_a_failed_arm_of_its_timer(epolld):
    n = epolld.notify()
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": SHIM, "EPOLLD_FAIL_STATUS_ARMS": "1",
           # the shim comes before the sanitizer runtime in the link order
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    d = epolld.start(listen=("127.0.0.1",), level=None, server={"idle_timeout": 0}, env=env,
                     notify=n)
    with Client(d.port) as c:
        c.ask()  # the accept moves the counters: this arm fails
        d.wait_text("failed: Invalid argument")
        c.ask()  # a later loop turn arms it
        m = n.next(lambda m: set(m.fields) == {"STATUS"}, timeout=3.0, what="STATUS=")
        assert m.text == "STATUS=1 connections, 2 replies"
    assert d.count("err: timerfd_settime of fd ") == 1, d.log()
