"""A reload (SIGHUP, and the same step that SIGUSR2 takes before it
re-executes) does not look up [server] user (src/config.c): getpwnam() goes through NSS (sssd,
LDAP, systemd-userdb over varlink), which can stall, and a reload runs in
the loop. The user in force cannot change without a restart anyway: the
same name is kept, a changed one refused. The first start and -t still
look it up, so a typo there is a FILE:LINE error.

The lookups are seen through tests/integration/faultinject.c, preloaded:
every getpwnam() appends the name to EPOLLD_GETPWNAM_LOG.
"""
import os
import pwd

import pytest

from helpers import hi
from launcher import run_epolld, write_config

SHIM = os.environ.get("EPOLLD_FAULTINJECT", "")
pytestmark = pytest.mark.skipif(not os.path.exists(SHIM),
                                reason="faultinject.so not built (run via meson)")
ME = pwd.getpwuid(os.getuid()).pw_name  # already that user: nothing to switch


def preload(log):
    asan = os.environ.get("ASAN_OPTIONS", "")
    # the shim comes before the sanitizer runtime in the link order
    return {"LD_PRELOAD": SHIM, "EPOLLD_GETPWNAM_LOG": str(log),
            "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}


def lookups(log):
    return log.read_text().splitlines() if log.exists() else []


def test_start_looks_the_user_up_and_a_reload_does_not(epolld, tmp_path):
    log = tmp_path / "getpwnam.log"
    d = epolld.start(listen=("127.0.0.1",), server={"user": ME}, env=preload(log))
    assert ME in lookups(log)  # the first start checks the name
    before = lookups(log)
    d.reload()
    assert "notice: reloaded configuration from " in d.log()
    assert lookups(log) == before, "a reload looked the user up"
    assert hi(d.port) == b"Hi!"


def test_a_changed_user_is_refused_without_a_lookup(epolld, tmp_path):
    log = tmp_path / "getpwnam.log"
    d = epolld.start(listen=("127.0.0.1",), server={"user": ME}, env=preload(log))
    before = lookups(log)
    text = d.config.read_text().replace(f"user = {ME}", "user = nosuchuser9")
    d.config.write_text(text)
    d.reload()
    assert "warning: reload: a change of user takes a restart; keeping the current one" \
        in d.log()
    assert lookups(log) == before
    assert hi(d.port) == b"Hi!"


def test_check_mode_still_resolves(tmp_path):
    conf = write_config(tmp_path / "epolld.ini", ["127.0.0.1:8001"], {"user": "nosuchuser9"})
    r = run_epolld("-t", "-c", str(conf))
    assert r.returncode == 78
    assert f"{conf}:3: user: unknown user 'nosuchuser9'" in r.stderr, r.stderr
