"""Network and endpoint records whose write lands after pynet gave up (issue 9, C): the call
answered 503 and undid its kernel work, so once the store answers again the late record must
go, leaving the state exactly as if the call had not happened."""
from __future__ import annotations

from pynet.app import Deps
from pynet_core.errors import BackendUnavailable
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client
from tests.harness.wait import wait_until

NID, EID = "a" * 64, "e" * 64
HOSTS = "v1/hosts/h1/"


class LateStore(MemoryStore):
    """A transaction matching `late` is applied, then answered with a timeout: the write
    landed, but the caller was told it did not."""

    def __init__(self) -> None:
        super().__init__()
        self.late = lambda ops: False
        self.landed = 0

    def transaction(self, ops):
        done = super().transaction(ops)
        if done and self.late(ops):
            self.landed += 1
            raise BackendUnavailable("consul at 127.0.0.1:8500 did not answer within 3.0s (a test)")
        return done


def world():
    store = LateStore()
    deps = Deps(store=store, netlink=FakeNetlink(), firewall=RecordingFirewall())
    return store, deps.netlink, app_client(deps, host_id="h1")


def network(client, nid=NID):
    return client.call("NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {"com.docker.network.generic": {"bridge_name": "late0"}},
        "IPv4Data": [{"Pool": "10.7.0.0/24", "Gateway": "10.7.0.1/24"}]})


def settle(client) -> None:
    retries = client.network.ledger.retries
    wait_until(lambda: retries.run_once() == 0 and not retries.pending(), 10,
               "the driver's retries to finish", interval=0.05)


def cas_of(prefix):
    return lambda ops: any(op.verb == "cas" and op.key.startswith(prefix) for op in ops)


def test_a_network_made_ready_too_late_is_removed(monkeypatch):
    store, kernel, client = world()
    store.late = cas_of(HOSTS + "networks/")
    status, answer = network(client)
    assert status == 503 and "did not answer" in answer["Err"]
    assert store.landed == 1 and "late0" not in kernel.state
    store.late = lambda ops: False
    settle(client)
    assert store.list(HOSTS) == []
    # Docker's retry then works, and only it remains.
    assert network(client) == (200, {})
    assert [e.key for e in store.list(HOSTS + "networks/")] == [HOSTS + "networks/" + NID]


def test_a_network_intent_that_lands_late_is_removed():
    store, kernel, client = world()
    store.late = lambda ops: any(op.verb == "create" and op.key.startswith(HOSTS + "networks/")
                                 for op in ops)
    assert network(client)[0] == 503
    assert "late0" not in kernel.state and store.landed == 1
    store.late = lambda ops: False
    settle(client)
    assert store.list(HOSTS) == []


def test_an_endpoint_made_ready_too_late_is_removed():
    store, kernel, client = world()
    assert network(client) == (200, {})
    store.late = cas_of(HOSTS + "endpoints/")
    status, _ = client.call("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.7.0.2/24"}})
    assert status == 503 and store.landed == 1
    assert "pnv" + EID[:12] not in kernel.state and "pnc" + EID[:12] not in kernel.state
    store.late = lambda ops: False
    settle(client)
    assert store.list(HOSTS + "endpoints/") == []
    assert [e.key for e in store.list(HOSTS + "names/endpoint/")] == []
    assert client.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})
    assert store.list(HOSTS) == [] and "late0" not in kernel.state
