"""pynet DNS with the suite's real dockerd (issue 21 items 1-2): the plugin restarted with
`--dns-addr` on the test dockerd's default bridge gateway (198.19.200.1, pnt-docker0) and
an upstream that is a fake server on loopback (never a real resolver); containers started
with `--dns 198.19.200.1`, as docs/dns.md sets up.

* a container of a pynet network asks pynet's address directly: the other container's name
  and its `--network-alias` are answered with its pynet address (the asker is known by its
  source address, pynet's own address of it);
* through Docker's embedded resolver (127.0.0.11): a name Docker does not know is forwarded
  from the container's namespace to pynet, and by pynet to its upstream;
* isolation: a container of another pynet network is not answered the first network's names
  (they are forwarded like any unknown name); a container of no pynet network (Docker's
  default bridge) is refused;
* the name goes with the container, and so does its record in the store.
"""
from __future__ import annotations

import socket
import time

import pytest

from driver.firewall.dns_guard import DnsGuard
from driver.firewall.dns_rules import TABLE
from driver.firewall.nft import Nft
from pynet_core.store import keys
from tests.harness.e2e_support import DRIVER, ip_of, name, run
from tests.harness.dns_upstream import FakeUpstream

DNS_ADDR = "198.19.200.1"  # the test dockerd's default bridge (tests/harness/dockerd.py)


@pytest.fixture
def upstream():
    fake = FakeUpstream("127.0.0.1")
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def dns_plugin(plugin, upstream):
    """The session's plugin, restarted to serve DNS; put back as it was afterwards."""
    saved = dict(plugin.extra_env)
    plugin.extra_env.update({"PYNET_DNS_ADDR": DNS_ADDR,
                             "PYNET_DNS_UPSTREAM": f"127.0.0.1:{upstream.port}"})
    plugin.restart()
    try:
        yield plugin
    finally:
        plugin.extra_env.clear()
        plugin.extra_env.update(saved)
        plugin.restart()  # without --dns-addr it removes the DNS table too
        DnsGuard(()).remove()
        assert Nft().text(f"table inet {TABLE}") == ""


def nslookup(dockerd, ctr: str, target: str, server: str | None = None):
    return dockerd.cli("exec", ctr, "timeout", "10", "nslookup", target,
                       *([server] if server else []), check=False)


def eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_a_container_finds_another_by_name_through_pynet_dns(dockerd, busybox_image, dns_plugin, upstream):
    net, other_net = name("dns"), name("dns")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.216.0/24", net)
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.217.0/24", other_net)
    web = run(dockerd, busybox_image, net, "--network-alias", "api")
    asker = run(dockerd, busybox_image, net, "--dns", DNS_ADDR)
    web_ip = ip_of(dockerd, web)

    # Asked directly: pynet answers the container name and the alias with web's address.
    def answered(target):
        out = nslookup(dockerd, asker, target, DNS_ADDR)
        return out.stdout if web_ip in out.stdout else None
    assert eventually(lambda: answered("api")), nslookup(dockerd, asker, "api", DNS_ADDR)
    assert answered(web) and answered(f"{web}.{net}")

    # Through Docker's embedded resolver: a name Docker does not know goes to pynet (from the
    # container's namespace) and on to pynet's upstream, the fake on loopback.
    out = nslookup(dockerd, asker, "example.test")
    assert "192.0.2.1" in out.stdout, out.stdout + out.stderr
    assert any(seen_name == "example.test" for _, seen_name, _ in upstream.seen)

    # Another pynet network's container is not answered web's name: it is forwarded (the
    # fake upstream says 192.0.2.1), never given web's address.
    stranger = run(dockerd, busybox_image, other_net, "--dns", DNS_ADDR)
    out = nslookup(dockerd, stranger, "api", DNS_ADDR)
    assert web_ip not in out.stdout and "192.0.2.1" in out.stdout, out.stdout + out.stderr
    # A container on no pynet network (Docker's own bridge) may not use pynet's DNS at all.
    outsider = dockerd.cli("run", "-d", "--pull", "never", "--name", name("c"), busybox_image,
                           "sleep", "600").stdout.strip()
    out = nslookup(dockerd, outsider, "example.test", DNS_ADDR)
    assert "192.0.2.1" not in out.stdout and web_ip not in out.stdout, out.stdout

    # The container goes: its name goes, and its record (the plugin's host id is this
    # machine's hostname: the suite's plugin runs without --host-id).
    eid = dockerd.cli("inspect", "-f", f"{{{{(index .NetworkSettings.Networks \"{net}\").EndpointID}}}}",
                      web).stdout.strip()
    record = keys.name_record(socket.gethostname(), eid)
    assert [e.key for e in dns_plugin.stored(record)] == [record]
    dockerd.cli("rm", "-f", web)
    assert eventually(lambda: web_ip not in nslookup(dockerd, asker, "api", DNS_ADDR).stdout)
    assert eventually(lambda: dns_plugin.stored(record) == [])
