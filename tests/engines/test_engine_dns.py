"""pynet DNS on Docker Engine 20.10, 26.1 and 28.5 (issue 21 item 2): dockerd forwards a
`--dns` server's queries from the container's own namespace on every engine, so pynet knows
the asker by its source address.

The bed's plugin is restarted with `--dns-addr` on the bed dockerd's default bridge gateway
(198.19.200.1) and a fake upstream on loopback. A name Docker does not know, asked through
Docker's embedded resolver, reaches pynet and its upstream only if the query comes from a
container's address: from the host's namespace it would come from 198.19.200.1 itself, no
container, and pynet would refuse it. A container's own network's names are answered by
pynet asked directly; another network's are not.
"""
from __future__ import annotations

import time

import pytest

from tests.engines.conftest import Bed
from tests.engines.test_engine_smoke import addresses, network, run
from tests.harness.dns_upstream import FakeUpstream

DNS_ADDR = "198.19.200.1"  # the bed dockerd's default bridge gateway (tests/harness/dockerd.py)


@pytest.fixture
def dns_bed(bed: Bed):
    upstream = FakeUpstream("127.0.0.1")
    saved = dict(bed.plugin.extra_env)
    bed.plugin.extra_env.update({"PYNET_DNS_ADDR": DNS_ADDR,
                                 "PYNET_DNS_UPSTREAM": f"127.0.0.1:{upstream.port}"})
    bed.plugin.restart()
    try:
        yield bed, upstream
    finally:
        bed.plugin.extra_env.clear()
        bed.plugin.extra_env.update(saved)
        bed.plugin.restart()  # without --dns-addr: the DNS table goes too
        upstream.close()


def nslookup(bed: Bed, ctr: str, name: str, server: str | None = None) -> str:
    return bed.dockerd.cli("exec", ctr, "timeout", "10", "nslookup", name,
                           *([server] if server else []), check=False).stdout


def test_docker_forwards_to_pynet_from_the_container_and_pynet_answers_its_network(dns_bed):
    bed, upstream = dns_bed
    net = network(bed, "--subnet", "198.19.218.0/24")
    other = network(bed, "--subnet", "198.19.219.0/24")
    web = run(bed, net, "--network-alias", "api")
    asker = run(bed, net, "--dns", DNS_ADDR)
    stranger = run(bed, other, "--dns", DNS_ADDR)
    web_ip, _ = addresses(bed, web)

    deadline = time.monotonic() + 15
    while web_ip not in nslookup(bed, asker, "api", DNS_ADDR):
        assert time.monotonic() < deadline, nslookup(bed, asker, "api", DNS_ADDR)
        time.sleep(0.2)
    # Through Docker's resolver, from the container's namespace, on to pynet's upstream.
    out = nslookup(bed, asker, "example.test")
    assert "192.0.2.1" in out, f"docker {bed.version}: {out}"
    assert any(name == "example.test" for _, name, _ in upstream.seen)
    # Another network's container is not given web's address.
    out = nslookup(bed, stranger, "api", DNS_ADDR)
    assert web_ip not in out, out
