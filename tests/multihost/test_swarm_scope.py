"""No silent Swarm trap (issue 18): every path that would give a swarm network node-local
networks instead is refused with an error naming the fix, next to the working path. A real
Swarm on the multi-host bed (tests/harness/swarm.py: dockerd 20.10 per host, one Consul
cluster, the managed plugin on every node), h1 manager and h2 worker.

1. The working path, the plugin set as the refusals below say (PYNET_SCOPE=global, overlay
   with --ipam-driver pynet): one network, a task on every node, tasks reach each other.
2. An overlay whose pool did not come from pynet's IPAM (no --ipam-driver pynet): each node
   would hand out the same addresses; refused on every node naming --ipam-driver pynet.
3. The plugin switched to its default scope, local (disable, set, enable on every node): a
   `--scope swarm` overlay made on the manager is not allocated by Swarm, and each node gets
   neither its options nor its pools. Observed on this bed (dockerd 20.10.24), each node's
   CreateNetwork then carries only Swarm's network ID (25 characters), empty generic options
   and a /26 from Docker's own IPAM (198.19.247.0/26 on h1, 198.19.246.0/26 on h2): pynet
   refuses it by that ID, and each task's error names PYNET_SCOPE=global.

The plugin is built as in test_swarm.py (PYNET_SWARM_PLUGIN=dev: this checkout, bind-mounted).
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.multihost import REPO_ROOT, Host
from tests.harness.swarm import PLUGIN, SwarmBed, dev_plugin_dir
from tests.harness.wait import wait_until

SUBNET = "10.62.0.0/24"
IMAGE = "pynet-test/busybox:1"
CONVERGE = 90.0


def plugin_dir(out: Path) -> Path:
    if os.environ.get("PYNET_SWARM_PLUGIN") == "dev":
        return dev_plugin_dir(out)
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-plugin.sh"), "-o", str(out),
                           "--no-create", PLUGIN], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/build-plugin.sh failed:\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmBed]:
    built = plugin_dir(tmp_path_factory.mktemp("plugin") / "pynet")
    bed = SwarmBed(tmp_path_factory.mktemp("swarm"), built, name="pnss", underlay="198.18.12.0/24",
                   hosts=2)
    bed.up()
    try:
        yield bed
    finally:
        left = bed.down()
        if left:
            pytest.fail("the swarm bed left things behind:\n" + "\n".join(left), pytrace=False)


def task_errors(swarm: SwarmBed, service: str) -> dict[str, str]:
    """node -> the error of its latest failed task (every node has one, or we wait)."""
    out = swarm.manager.docker("service", "ps", service, "--no-trunc", "--format",
                               "{{.Node}}\t{{.CurrentState}}\t{{.Error}}", check=False).stdout
    errors: dict[str, str] = {}
    for line in out.splitlines():
        node, _, error = (line.split("\t") + ["", ""])[:3]
        if error and node not in errors:
            errors[node] = error
    return errors


def wait_errors(swarm: SwarmBed, service: str, fragment: str) -> dict[str, str]:
    names = {h.name for h in swarm.hosts}

    def done() -> dict[str, str] | None:
        errors = task_errors(swarm, service)
        return errors if set(errors) == names and all(fragment in e for e in errors.values()) else None
    try:
        return wait_until(done, CONVERGE, f"every node's task of {service} refused naming {fragment}",
                          interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{task_errors(swarm, service)}") from None


def running(swarm: SwarmBed, service: str) -> list[tuple[Host, str]]:
    found = []
    for h in swarm.hosts:
        for cid in h.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").stdout.split():
            found.append((h, cid))
    return found


def pynet_networks(swarm: SwarmBed) -> dict[str, str]:
    """Every network record of pynet in the store, on any host."""
    return swarm.bed.kv("pynet/v1/hosts/")


def remove(swarm: SwarmBed, service: str, network: str) -> None:
    m = swarm.manager
    m.docker("service", "rm", service, check=False)
    wait_until(lambda: not running(swarm, service), CONVERGE, f"{service}'s containers gone", interval=1.0)
    # Swarm removes a network once no task of it is left; the nodes' copies follow.
    wait_until(lambda: m.docker("network", "rm", network, check=False).returncode == 0 or
               m.docker("network", "inspect", network, check=False).returncode != 0,
               CONVERGE, f"network {network} removed", interval=1.0)


def overlay(h: Host, name: str, *extra: str) -> str:
    return h.docker("network", "create", "-d", PLUGIN, *extra, "-o", "type=overlay", "--scope", "swarm",
                    "--attachable", "--subnet", SUBNET, name).stdout.strip()


def service(h: Host, name: str, network: str) -> None:
    h.docker("service", "create", "-d", "--name", name, "--mode", "global", "--network", network,
             IMAGE, "sleep", "3600", timeout=60)


# --- tests --------------------------------------------------------------------------------
def test_the_working_path_global_scope_and_pynets_ipam_gives_one_network_across_the_nodes(swarm):
    m = swarm.manager
    overlay(m, "fixed", "--ipam-driver", PLUGIN)
    service(m, "web", "fixed")
    try:
        wait_until(lambda: len(running(swarm, "web")) == len(swarm.hosts), CONVERGE,
                   "a running task of web on every node", interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{task_errors(swarm, 'web')}") from None
    tasks = running(swarm, "web")
    addresses = {h.name: json.loads(h.docker("inspect", cid, "--format",
                                             "{{json .NetworkSettings.Networks}}").stdout)["fixed"]["IPAddress"]
                 for h, cid in tasks}
    # One pool for the swarm (pynet's, from the subnet given), and tasks reach each other.
    assert all(ip.startswith("10.62.0.") for ip in addresses.values()), addresses
    (h1, c1), (h2, c2) = tasks[0], tasks[1]
    assert h1.name != h2.name
    for (h, cid), target in (((h1, c1), addresses[h2.name]), ((h2, c2), addresses[h1.name])):
        ping = h.docker("exec", cid, "ping", "-c", "1", "-W", "3", target, check=False)
        assert ping.returncode == 0, (h.name, target, ping.stdout, ping.stderr)
    remove(swarm, "web", "fixed")


def test_an_overlay_whose_pool_is_not_pynets_is_refused_naming_the_ipam_driver(swarm):
    m = swarm.manager
    overlay(m, "noipam")  # no --ipam-driver pynet: Docker's own IPAM gives the pools
    service(m, "lost", "noipam")
    errors = wait_errors(swarm, "lost", "--ipam-driver pynet")
    assert all("came from another IPAM driver" in e for e in errors.values()), errors
    assert running(swarm, "lost") == []
    remove(swarm, "lost", "noipam")


def test_a_swarm_network_on_the_local_scope_is_refused_naming_pynet_scope_global(swarm):
    for h in swarm.hosts:  # the plugin's default scope; a network of it must be gone first
        h.docker("plugin", "disable", PLUGIN, timeout=60)
        h.docker("plugin", "set", PLUGIN, "PYNET_SCOPE=local", timeout=60)
        h.docker("plugin", "enable", PLUGIN, timeout=60)
    m = swarm.manager
    nid = overlay(m, "trap", "--ipam-driver", PLUGIN)
    service(m, "trapped", "trap")
    errors = wait_errors(swarm, "trapped", "PYNET_SCOPE=global")
    assert all(f"network {nid} is a swarm network" in e for e in errors.values()), errors
    # Nothing was made on any node: no task runs, no record of the network, no bridge for it
    # (the silent fallback was a bridge network on each node).
    assert running(swarm, "trapped") == []
    assert not [k for k in pynet_networks(swarm) if nid in k]
    for h in swarm.hosts:
        assert f"pn-{nid[:12]}" not in h.run("ip", "-o", "link", "show").stdout
    remove(swarm, "trapped", "trap")
