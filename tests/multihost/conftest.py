"""The multi-host suite: one three-host bed (tests/harness/multihost.py) for the session.

Every test here is marked `multihost`. The bed lives in its own namespaces, so it runs next
to the single-host e2e suite without touching /run/docker/plugins or the root firewall.
After each test the bed is put back as it was (hosts healed, every Consul server and plugin
running, containers and networks removed, pynet's IPAM and host keys gone); the session
ends by checking that the bed left nothing on the machine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.harness.multihost import MultiHost  # noqa: E402
from tests.multihost.support import brought_up, consul_delete_tree  # noqa: E402

_HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "multihost: needs root; starts three simulated hosts "
                                       "(dockerd + Consul + pynet each) in namespaces of their own")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.multihost)


@pytest.fixture(scope="session")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    with brought_up("multi-host", MultiHost(tmp_path_factory.mktemp("multihost"))) as bed:
        yield bed


@pytest.fixture(autouse=True)
def _reset_bed(request: pytest.FixtureRequest) -> Iterator[None]:
    if "bed" not in request.fixturenames:
        yield
        return
    bed: MultiHost = request.getfixturevalue("bed")
    yield
    restore(bed)


def restore(bed: MultiHost) -> None:
    """Put the bed back to its start state after a test, whatever the test did."""
    for h in bed.hosts:
        bed.heal(h)
        if not h.consul.running():
            bed.start_consul(h)
    bed.wait_for_cluster(timeout=60)
    for h in bed.hosts:
        if not h.plugin.running():
            h.plugin.start()
            bed.wait_plugin(h)
    for h in bed.hosts:
        ids = h.docker("ps", "-aq").stdout.split()
        if ids:
            h.docker("rm", "-f", *ids, timeout=120)
        nets = [n for n in h.docker("network", "ls", "--filter", "driver=pynet", "-q").stdout.split()]
        if nets:
            h.docker("network", "rm", *nets, timeout=120)
    # Whatever a failed test left in Consul (the fences stay: the plugins cache them).
    for prefix in ("pynet/v1/ipam/addrs/", "pynet/v1/ipam/blocks/", "pynet/v1/ipam/spaces/",
                   "pynet/v1/hosts/"):
        consul_delete_tree(bed, prefix)
