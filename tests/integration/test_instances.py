"""Several instances on one port ([server] reuseport, src/listener.c) and
the instance name in every log line (EPOLLD_INSTANCE, src/log.c).

Standalone instances share a port only if each binds it with
`reuseport = yes`; the kernel then spreads new connections over them. A
reload keeps the sockets it has, as they were bound: a changed reuseport
applies to addresses bound from then on, and a notice says so.
"""
import re
import signal
import subprocess

from helpers import free_port, free_ports, hi, wait_until
from launcher import EPOLLD as BIN

EX_OSERR, EX_CONFIG = 71, 78


def instances(epolld, port, n, reuseport="yes", **kw):
    """N daemons on 127.0.0.1:PORT, named 1..N, each with its own file."""
    started = []
    for i in range(1, n + 1):
        conf = epolld.config(f"i{i}.ini", listen=[f"127.0.0.1:{port}"], reuseport=reuseport, **kw)
        started.append(epolld.start(conf, env={"EPOLLD_INSTANCE": str(i)}))
    return started


def served(d):
    return len(re.findall(r"^epolld@\d+: info: accepted connection #\d+ ", d.log(), re.M))


def test_three_instances_share_a_port(epolld):
    port = free_port()
    ds = instances(epolld, port, 3)
    for i, d in enumerate(ds, 1):
        assert f"epolld@{i}: info: listening on 127.0.0.1:{port}\n" in d.log()
    for _ in range(300):
        assert hi(port) == b"Hi!"
    wait_until(lambda: sum(served(d) for d in ds) == 300, what="300 accept lines")
    shares = [served(d) for d in ds]
    assert all(s > 0 for s in shares), shares
    # Each instance counts its own connections from #1, and says whose they are.
    for i, d in enumerate(ds, 1):
        assert re.search(rf"^epolld@{i}: info: accepted connection #1 from 127\.0\.0\.1:\d+ ",
                         d.log(), re.M), d.log()
        assert all(line.startswith(f"epolld@{i}: ") for line in d.lines()), d.log()


def test_without_reuseport_a_second_instance_fails(epolld):
    port = free_port()
    (first,) = instances(epolld, port, 1, reuseport="no")
    conf = epolld.config("second.ini", listen=[f"127.0.0.1:{port}"])  # the default is no
    second = epolld.start(conf, wait=False)
    assert second.wait_exit() == EX_OSERR
    assert f"err: cannot listen on 127.0.0.1:{port}: Address already in use\n" in second.log()
    assert first.running() and hi(port) == b"Hi!"


def test_reuseport_on_one_side_only_is_not_enough(epolld):
    port = free_port()
    instances(epolld, port, 1, reuseport="yes")
    conf = epolld.config("second.ini", listen=[f"127.0.0.1:{port}"], reuseport="no")
    second = epolld.start(conf, wait=False)
    assert second.wait_exit() == EX_OSERR
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in second.log()


def test_bad_value_is_a_config_error(epolld):
    conf = epolld.config("bad.ini", listen=["127.0.0.1:1"], reuseport="on")
    p = subprocess.run([BIN, "-t", "-c", conf], capture_output=True, text=True, timeout=10)
    assert p.returncode == EX_CONFIG
    assert p.stderr == f"{conf}:3: reuseport: expected yes or no, not 'on'\n"
    conf = epolld.config("twice.ini", listen=["127.0.0.1:1"], reuseport="no")
    with open(conf, "a") as f:
        f.write("reuseport = yes\n")
    p = subprocess.run([BIN, "-t", "-c", conf], capture_output=True, text=True, timeout=10)
    assert p.returncode == EX_CONFIG
    assert p.stderr == f"{conf}:4: duplicate key 'reuseport' (first set on line 3)\n"


def test_reload_keeps_sockets_as_bound(epolld):
    """no -> yes: the kept listener stays out of any group (a second
    instance still cannot join it), an address added by the same reload is
    bound with SO_REUSEPORT (a second instance can join that one)."""
    kept, added = free_ports(2)
    conf = epolld.config("a.ini", listen=[f"127.0.0.1:{kept}"], reuseport="no")
    d = epolld.start(conf)
    epolld.config("a.ini", listen=[f"127.0.0.1:{kept}", f"127.0.0.1:{added}"], reuseport="yes")
    d.reload()
    assert (f"notice: listener 127.0.0.1:{kept} keeps its socket, bound with reuseport = no; "
            "reuseport = yes applies to addresses bound from now on (stop and start epolld "
            "to rebind it)\n") in d.log()
    assert "reloaded configuration" in d.log()

    other = epolld.start(epolld.config("b.ini", listen=[f"127.0.0.1:{kept}"], reuseport="yes"),
                     wait=False)
    assert other.wait_exit() == EX_OSERR
    joined = epolld.start(epolld.config("c.ini", listen=[f"127.0.0.1:{added}"], reuseport="yes"))
    assert hi(kept) == b"Hi!" and hi(added) == b"Hi!"
    assert joined.running()

    # yes -> no: the shared socket stays shared, said the same way.
    epolld.config("c.ini", listen=[f"127.0.0.1:{added}"], reuseport="no")
    joined.reload()
    assert (f"notice: listener 127.0.0.1:{added} keeps its socket, bound with reuseport = yes; "
            "reuseport = no applies to addresses bound from now on") in joined.log()
    third = epolld.start(epolld.config("e.ini", listen=[f"127.0.0.1:{added}"], reuseport="yes"))
    assert third.running()


def test_reload_without_change_says_nothing(epolld):
    port = free_port()
    (d,) = instances(epolld, port, 1)
    d.reload()
    assert "keeps its socket" not in d.log()


def test_socket_activation_ignores_the_key(epolld):
    port = free_port()
    conf = epolld.config(listen=[f"127.0.0.1:{free_port()}"], reuseport="yes")
    d = epolld.start(conf, activate=[f"127.0.0.1:{port}"], env={"EPOLLD_INSTANCE": "7"})
    epolld.trigger(d, port).ask()
    assert ("epolld@7: notice: socket activation: ignoring reuseport = yes; the .socket "
            "unit's ReusePort= decides\n") in d.log()


def test_without_instance_lines_are_unchanged(epolld):
    (d,) = [epolld.start(epolld.config(listen=[f"127.0.0.1:{free_port()}"]))]
    assert re.search(r"^info: epolld \S+ started: ", d.log(), re.M)
    assert "epolld@" not in d.log()


def test_bad_instance_name_is_ignored(epolld):
    conf = epolld.config(listen=[f"127.0.0.1:{free_port()}"])
    d = epolld.start(conf, env={"EPOLLD_INSTANCE": "a b"})
    assert d.log().startswith("warning: ignoring EPOLLD_INSTANCE: at most 64 characters, "
                              "no spaces or control characters\n")
    assert "epolld@" not in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
