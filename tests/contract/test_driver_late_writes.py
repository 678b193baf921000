"""Network and endpoint records that land after pynet gave up, against a real Consul agent
(issue 9, C and "What to build" 4; the IPAM paths are in test_ipam_late_writes.py).

SlowConsul holds the write that makes a record ready past pynet's 3 s request timeout, so
the call answers 503 and undoes its kernel work; its clean-up write is held too and never
lands, while the ready write does, late. Once the store answers and the driver's retries
run, the host's records must be exactly as if the call had not happened, and Docker's retry
of the call works.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pynet.app import Deps
from pynet_core.store.consul import ConsulStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import AppClient, app_client
from tests.harness.consul import ConsulAgent
from tests.harness.slow_consul import SlowConsul

pytestmark = pytest.mark.consul

NID, EID = "a" * 64, "e" * 64
HOST = "v1/hosts/h1/"


@pytest.fixture
def proxy(consul_agent: ConsulAgent) -> Iterator[SlowConsul]:
    with SlowConsul(consul_agent.addr) as slow:
        yield slow


@pytest.fixture
def world(proxy: SlowConsul) -> Iterator[tuple[ConsulStore, FakeNetlink, AppClient]]:
    store = ConsulStore(proxy.addr, prefix=f"pynet-test/{uuid.uuid4().hex[:12]}/")
    deps = Deps(store=store, netlink=FakeNetlink(), firewall=RecordingFirewall())
    yield store, deps.netlink, app_client(deps, host_id="h1")
    store.close()


def after_first_txn():
    """Hold every KV write after the first /v1/txn (the intent) goes through."""
    seen = {"txn": 0}

    def match(method: str, path: str) -> bool:
        if method not in ("PUT", "DELETE"):
            return False
        if path.startswith("/v1/txn") and seen["txn"] == 0:
            seen["txn"] = 1
            return False
        return seen["txn"] > 0
    return match


def land_the_ready_write_only(proxy: SlowConsul) -> None:
    proxy.pass_through()
    assert proxy.release(1) == 1, "the ready write was not held"
    proxy.drop()  # the failed call's clean-up never lands


def settle(client: AppClient) -> None:
    retries = client.network.ledger.retries
    for _ in range(20):
        if retries.run_once() == 0:
            return
    raise AssertionError(f"still queued: {retries.pending()}")


def records(store: ConsulStore) -> list[str]:
    return [e.key for e in store.list(HOST)]


def create_network(client: AppClient) -> tuple[int, dict]:
    return client.call("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {"bridge_name": "late0"}},
        "IPv4Data": [{"Pool": "10.31.0.0/24", "Gateway": "10.31.0.1/24"}]})


def test_a_network_made_ready_after_pynet_gave_up_is_undone(proxy, world):
    store, kernel, client = world
    proxy.hold(after_first_txn())
    status, answer = create_network(client)
    assert status == 503 and "consul" in answer["Err"]
    assert "late0" not in kernel.state
    land_the_ready_write_only(proxy)
    assert any(k.startswith(HOST + "networks/") for k in records(store))  # it did land
    settle(client)
    assert records(store) == []
    assert create_network(client) == (200, {})  # Docker's retry
    assert kernel.state["late0"].kind == "bridge"


def test_an_endpoint_made_ready_after_pynet_gave_up_is_undone(proxy, world):
    store, kernel, client = world
    assert create_network(client) == (200, {})
    before = records(store)
    proxy.hold(after_first_txn())
    status, _ = client.call("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.31.0.2/24"}})
    assert status == 503
    assert "pnv" + EID[:12] not in kernel.state
    land_the_ready_write_only(proxy)
    assert any(k.startswith(HOST + "endpoints/") for k in records(store))
    settle(client)
    assert [k for k in records(store) if not k.endswith("/fence")] == \
        [k for k in before if not k.endswith("/fence")]
    assert client.call("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.31.0.2/24"}})[0] == 200
    assert client.call("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})[0] == 200
    assert client.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200
    assert records(store) == [] and kernel.state == {}
