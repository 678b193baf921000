"""A pynet overlay across two simulated hosts, each running Docker Engine 28.5 (the newest
engine here; tests/multihost runs the same on 20.10 with three hosts): one network made on
both hosts, containers on each reaching the other over ping and TCP.

The bed (tests/harness/multihost.py): per host its own namespaces, a Consul server and a
pynet plugin; dockerd is the 28.5 engine run natively from its cache directory.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.harness.multihost import MultiHost
from tests.harness.netprobe import CLIENT
from tests.harness.wait import wait_until
from tests.multihost.support import ctr_python, network_id, overlay_create, pings, run_on, start_server

ENGINE = "28.5"
_timings: dict[str, float] = {}


@pytest.fixture(scope="module")
def obed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    started = time.monotonic()
    bed = MultiHost(tmp_path_factory.mktemp("engine-overlay"), hosts=2, name="pneo",
                    underlay="198.18.10.0/24", engine=ENGINE)
    bed.up()
    try:
        yield bed
    finally:
        for h in bed.hosts:
            if h.dockerd.running():
                ids = h.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    h.docker("rm", "-f", *ids, timeout=120, check=False)
                nets = h.docker("network", "ls", "--filter", "driver=pynet", "-q", check=False).stdout.split()
                if nets:
                    h.docker("network", "rm", *nets, timeout=120, check=False)
        left = bed.down()
        print(f"\n[engines] docker {ENGINE} two-host overlay bed: {time.monotonic() - started:.1f} s")
        if left:
            pytest.fail("the engine overlay bed left things behind:\n" + "\n".join(left), pytrace=False)


def test_overlay_between_two_hosts_on_docker_28(obed: MultiHost) -> None:
    h1, h2 = obed.hosts
    for h in (h1, h2):
        version = h.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        assert version.startswith(ENGINE), f"{h} runs docker {version}, not {ENGINE}"
        overlay_create(h, "ov", "10.61.1.0/24")
    assert network_id(h1, "ov") != network_id(h2, "ov")  # two local networks, one overlay
    a, b = run_on(h1, "ca", "ov"), run_on(h2, "cb", "ov")  # 28 refuses one-letter names
    assert a.ip != b.ip and a.ip.startswith("10.61.1.") and b.ip.startswith("10.61.1.")
    wait_until(lambda: pings(a, b.ip) and pings(b, a.ip), 15, "a on h1 and b on h2 pinging each other")
    server = start_server(b.pid)
    try:
        assert ctr_python(a, CLIENT, "tcp", b.ip, "7000") == f"tcp {a.ip}"
    finally:
        server.kill()
        server.wait()
