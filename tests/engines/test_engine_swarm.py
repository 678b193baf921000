"""One Swarm service on pynet through the managed plugin, two simulated hosts each running
Docker Engine 28.5 (tests/multihost/test_swarm.py does the full set on 20.10): the service's
tasks land on both nodes, get addresses from the network's subnet and reach each other.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.harness.multihost import REPO_ROOT, Host
from tests.harness.swarm import PLUGIN, SwarmBed
from tests.harness.wait import wait_until

ENGINE = "28.5"
SUBNET = "10.62.0.0/24"
NET = "ov28"
IMAGE = "pynet-test/busybox:1"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmBed]:
    started = time.monotonic()
    out = tmp_path_factory.mktemp("plugin") / "pynet"
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-plugin.sh"), "-o", str(out),
                           "--no-create", PLUGIN], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/build-plugin.sh failed:\n{proc.stderr[-3000:]}"
    bed = SwarmBed(tmp_path_factory.mktemp("engine-swarm"), out, name="pnes", underlay="198.18.11.0/24",
                   hosts=2, engine=ENGINE)
    bed.up()
    try:
        yield bed
    finally:
        left = bed.down()
        print(f"\n[engines] docker {ENGINE} two-node swarm bed (plugin build included): "
              f"{time.monotonic() - started:.1f} s")
        if left:
            pytest.fail("the engine swarm bed left things behind:\n" + "\n".join(left), pytrace=False)


def _containers(h: Host, service: str) -> list[str]:
    return h.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").stdout.split()


def _address(h: Host, cid: str) -> str:
    nets = json.loads(h.docker("inspect", cid, "--format", "{{json .NetworkSettings.Networks}}").stdout)
    return nets[NET]["IPAddress"]


def test_a_swarm_service_spans_both_nodes_on_docker_28(swarm: SwarmBed) -> None:
    manager = swarm.manager
    for h in swarm.hosts:
        version = h.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        assert version.startswith(ENGINE), f"{h} runs docker {version}, not {ENGINE}"
    manager.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "-o", "type=overlay",
                   "--scope", "swarm", "--attachable", "--subnet", SUBNET, NET)
    manager.docker("service", "create", "--detach", "--name", "web", "--replicas", "4",
                   "--network", NET, IMAGE, "httpd", "-f", "-p", "80")

    def placed() -> dict[str, list[str]] | None:
        found = {h.name: _containers(h, "web") for h in swarm.hosts}
        return found if sum(map(len, found.values())) == 4 and all(found.values()) else None
    found = wait_until(placed, 120, "4 tasks of web running on both nodes", interval=1.0)
    addresses = {_address(h, cid) for h in swarm.hosts for cid in found[h.name]}
    assert len(addresses) == 4 and all(ip.startswith("10.62.0.") for ip in addresses), addresses
    for h in swarm.hosts:
        cid = found[h.name][0]
        out = h.docker("exec", cid, "sh", "-c", " ".join(
            f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {a} 80 >/dev/null && echo ok {a} || echo FAIL {a};"
            for a in sorted(addresses)), check=False, timeout=60).stdout
        assert out.count("ok ") == 4, (h.name, out)
    manager.docker("service", "rm", "web")
    wait_until(lambda: not any(_containers(h, "web") for h in swarm.hosts), 60, "web's tasks gone")
    manager.docker("network", "rm", NET)
