"""IPAM writes that land after pynet gave up, against a real Consul agent (issue 9, C and
"What to build" 4).

Each test puts SlowConsul (tests/harness/slow_consul.py) between pynet and the agent, holds
the write of one IPAM call past pynet's 3 s request timeout inside its 4 s call budget (the
call answers 503), then lets the write land and the store settle (the repair queue runs
until empty). Afterwards the IPAM records must be exactly as if the call had either happened
or not: RequestPool, RequestAddress and block claims as if not (their late landing undone),
ReleasePool and ReleaseAddress as if once (a retried release never takes more).
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from ipam_driver.service import IpamService
from pynet_core import deadline
from pynet_core.errors import BackendUnavailable
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import keys
from pynet_core.store.consul import ConsulStore
from tests.fakes.ipam_client import DockerIpam
from tests.harness.consul import ConsulAgent
from tests.harness.slow_consul import SlowConsul

pytestmark = pytest.mark.consul

GW = {"RequestAddressType": "com.docker.network.gateway"}


def ep(name: str) -> dict[str, str]:
    return {"com.docker.network.endpoint.name": name}


@pytest.fixture
def proxy(consul_agent: ConsulAgent) -> Iterator[SlowConsul]:
    with SlowConsul(consul_agent.addr) as slow:
        yield slow


@pytest.fixture
def store(proxy: SlowConsul) -> Iterator[ConsulStore]:
    s = ConsulStore(proxy.addr, prefix=f"pynet-test/{uuid.uuid4().hex[:12]}/")  # 3 s timeout
    yield s
    s.close()


class Host:
    """One host's IPAM, called as the plugin calls it: each call inside one budget."""

    def __init__(self, store: ConsulStore, name: str = "h1", block_size: int = 0) -> None:
        self.ipam = DockerIpam(IpamService(store, name, block_size=block_size,
                                           retries=RetryQueue(background=False)))

    def __getattr__(self, method: str):
        call = getattr(self.ipam, method)

        def budgeted(*args):
            with deadline.budget():
                return call(*args)
        return budgeted

    def settle(self) -> None:
        for _ in range(10):
            if self.ipam.retries.run_once() == 0:
                return
        raise AssertionError(f"still queued: {self.ipam.retries.pending()}")


def ipam_state(store: ConsulStore) -> dict[str, object]:
    """Every IPAM record but the hosts' fences (moving them is how pynet settles)."""
    return {e.key: json.loads(e.value) for e in store.list("v1/ipam/")
            if not e.key.startswith("v1/ipam/fences/")}


def late(proxy: SlowConsul, call, *args) -> None:
    """Run call with its writes held: it must answer 503; then the writes land."""
    proxy.hold()
    with pytest.raises(BackendUnavailable):
        call(*args)
    proxy.pass_through()
    assert proxy.release() >= 1, "the call wrote nothing that could land late"


def test_request_pool_landing_late_is_as_if_it_never_happened(proxy, store):
    host = Host(store)
    keep, _ = host.request_pool("LocalDefault", "10.20.0.0/24", "", {}, False)
    before = ipam_state(store)
    late(proxy, host.request_pool, "LocalDefault", "10.21.0.0/24", "", {}, False)
    assert "10.21.0.0/24" in json.dumps(ipam_state(store))  # it did land: the subnet held
    host.settle()
    assert ipam_state(store) == before
    again, _ = host.request_pool("LocalDefault", "10.21.0.0/24", "", {}, False)  # no 409
    assert host.request_address(again, "", GW) == "10.21.0.1/24"
    assert keep.pool != again.pool


def test_release_pool_landing_late_and_retried_takes_one_hold_only(proxy, store):
    host = Host(store)
    manager, _ = host.request_pool("GlobalDefault", "10.22.0.0/24", "", {}, False)
    node, _ = host.request_pool("GlobalDefault", "10.22.0.0/24", "", {}, False)
    task = host.request_address(node, "", ep("task"))
    late(proxy, host.release_pool, manager)
    host.settle()  # the queued retry of the release runs against the landed write
    pool = ipam_state(store)[keys.ipam_space("GlobalDefault")]["pools"]["10.22.0.0/24"]
    assert (pool["holders"], pool["holds"]) == ({"h1": 1}, {node.hold: "h1"})
    assert keys.ipam_addr("GlobalDefault", "10.22.0.0/24", task.split("/")[0]) in ipam_state(store)


def test_request_address_landing_late_is_as_if_it_never_happened(proxy, store):
    host = Host(store)
    pool, _ = host.request_pool("LocalDefault", "10.23.0.0/24", "", {}, False)
    host.request_address(pool, "", GW)
    before = ipam_state(store)
    late(proxy, host.request_address, pool, "", ep("web"))
    host.settle()
    assert ipam_state(store) == before
    assert host.request_address(pool, "", ep("web")) == "10.23.0.2/24"


def test_release_address_landing_late_is_as_if_it_happened_once(proxy, store):
    host = Host(store)
    pool, _ = host.request_pool("LocalDefault", "10.24.0.0/24", "", {}, False)
    ip = host.request_address(pool, "", ep("old")).split("/")[0]
    late(proxy, host.release_address, pool, ip)
    assert keys.ipam_addr("LocalDefault", "10.24.0.0/24", ip) not in ipam_state(store)
    assert host.request_address(pool, ip, ep("new")) == f"{ip}/24"  # claimed anew meanwhile
    host.settle()  # the queued release must not free the new claim
    claim = ipam_state(store)[keys.ipam_addr("LocalDefault", "10.24.0.0/24", ip)]
    assert claim["name"] == "new"


def test_a_block_claim_landing_late_is_as_if_it_never_happened(proxy, store):
    h1 = Host(store, "h1", block_size=16)
    h2 = Host(store, "h2", block_size=16)
    pool, _ = h1.request_pool("LocalDefault", "10.25.0.0/24", "", {}, False)
    theirs, _ = h2.request_pool("LocalDefault", "10.25.0.0/24", "", {}, False)
    h1.request_address(pool, "", ep("first"))  # h1's block
    before = ipam_state(store)
    # h2's first address needs a block of its own: the block claim is the write held back.
    proxy.hold(lambda method, path: method == "PUT" and "ipam/blocks" in path
               or path.startswith("/v1/txn"))
    with pytest.raises(BackendUnavailable):
        h2.request_address(theirs, "", ep("second"))
    proxy.pass_through()
    assert proxy.release() >= 1
    assert any("/ipam/blocks/" in k and v["host"] == "h2" for k, v in ipam_state(store).items())
    h2.settle()
    assert ipam_state(store) == before
    assert h2.request_address(theirs, "", ep("second")) not in (None, "")
