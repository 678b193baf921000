"""With the store unreachable, plugin calls fail at once with a clear Err and leave nothing
half made; once it answers again they work (driver side and IPAM side, over fakes)."""
import pytest

from pynet.app import Deps
from pynet_core.errors import BackendUnavailable
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client

NID, EID = "a" * 64, "e" * 64
ERR = "consul at 10.0.0.5:8500 did not answer within 3.0s"


class OutageStore(MemoryStore):
    """Reads answer unless `down`; writes fail while `writes_down` (or `down`)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = self.writes_down = False

    def _gate(self, write: bool) -> None:
        if self.down or (write and self.writes_down):
            raise BackendUnavailable(f"{ERR} (a test outage)")

    def get(self, key):
        self._gate(False)
        return super().get(key)

    def list(self, prefix):
        self._gate(False)
        return super().list(prefix)

    def transaction(self, ops):
        self._gate(True)
        return super().transaction(ops)


@pytest.fixture
def world():
    store = OutageStore()
    deps = Deps(store=store, netlink=FakeNetlink(), firewall=RecordingFirewall())
    return store, deps.netlink, app_client(deps, host_id="h1")


def create_network(call):
    return call("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
        "IPv6Data": []})


def test_create_network_rolls_the_kernel_back_when_the_record_cannot_be_written(world):
    store, kernel, call = world
    store.writes_down = True
    status, answer = create_network(call)
    assert status == 503 and ERR in answer["Err"]
    assert kernel.state == {}  # the bridge made before the write is gone again
    store.writes_down = False
    assert create_network(call) == (200, {})
    assert "pn-" + NID[:12] in kernel.state


def test_create_endpoint_rolls_back_too(world):
    store, kernel, call = world
    assert create_network(call)[0] == 200
    before = set(kernel.state)
    store.writes_down = True
    status, answer = call("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}, "Options": {}})
    assert status == 503 and ERR in answer["Err"]
    assert set(kernel.state) == before


def test_ipam_calls_fail_clearly_and_work_again(world):
    store, _, call = world
    store.down = True
    status, answer = call("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24"})
    assert status == 503 and ERR in answer["Err"] and answer["Error"] == answer["Err"]
    store.down = False
    status, answer = call("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24"})
    assert status == 200
    status, answer = call("IpamDriver.RequestAddress", {"PoolID": answer["PoolID"], "Address": "", "Options": {}})
    assert (status, answer["Address"]) == (200, "10.1.0.1/24")
