"""pytest glue for the black-box tests of epolld: the `epolld` fixture, a
Launcher (launcher.py) for the test's daemons in its tmp_path, torn down
after the test. What the tests share besides starting the daemon is in
helpers.py."""
import pytest

from launcher import Launcher


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, for fixtures to look at."""
    outcome = yield
    setattr(item, "report_" + call.when, outcome.get_result())


@pytest.fixture
def epolld(tmp_path, request):
    """Starts daemons: epolld(**server_keys) for the plain case, or
    epolld.start(...) with options; see launcher.py."""
    launcher = Launcher(tmp_path, request)
    try:
        yield launcher
    finally:
        launcher.cleanup()
