"""AllocateNetwork / FreeNetwork (Swarm managers, --scope global) through the app, on hosts
sharing one store: the VNI is allocated cluster-wide once per Swarm network, answered in the
options Swarm hands the nodes, taken by the nodes' CreateNetwork, and freed by FreeNetwork
alone. The real dockerd's side is tests/multihost/test_swarm.py."""
from __future__ import annotations

import json

import pytest

from pynet_core.errors import BackendUnavailable
from pynet.settings import Settings
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.harness.app_client import app_client
from tests.harness.overlay_fake import GENERIC, FakeOverlayHosts

SWARM_NET = "k2mq0d8f5tq1vz8b3yl2c0h7x"  # Swarm's network IDs are 25 characters
OTHER_NET = "p9w1x0c3v5b7n2m4q6e8r0t1y"
SUBNET = "10.60.0.0/24"
VXLANID = "com.docker.network.driver.kinds.overlay.vxlanid_list"


@pytest.fixture
def store():
    return MemoryStore()


@pytest.fixture
def hosts(store):
    made = FakeOverlayHosts(store)
    yield made
    made.close()


def allocate(host, nid=SWARM_NET, subnet=SUBNET, **options):
    # Swarm sends the driver options flat (strings) and the pool without its address space.
    return host.call("NetworkDriver.AllocateNetwork", {
        "NetworkID": nid, "Options": {"type": "overlay", **options},
        "IPv4Data": [{"Pool": subnet, "Gateway": "10.60.0.1/24"}], "IPv6Data": []})


def vni_claims(store):
    prefix = keys.overlay_vnis()
    return {e.key[len(prefix):]: e.value for e in store.list(prefix)}


def test_the_scope_setting_is_what_get_capabilities_answers():
    assert app_client(host_id="h1")("NetworkDriver.GetCapabilities", {})[1] == \
        {"Scope": "local", "ConnectivityScope": "global"}
    client = app_client(host_id="h1", settings=Settings(host_id="h1", scope="global"))
    assert client("NetworkDriver.GetCapabilities", {})[1] == {"Scope": "global", "ConnectivityScope": "global"}


def test_allocate_answers_the_options_with_a_vni_that_the_nodes_take(hosts, store):
    manager, worker = hosts.add("h1", "198.18.0.11", scope="global"), hosts.add("h2", "198.18.0.12", scope="global")
    status, answer = allocate(manager)
    assert status == 200
    assert answer["Options"] == {"type": "overlay", VXLANID: "1048576"}
    # A retry (or a new leader allocating again with the state merged in) gets the same VNI.
    assert allocate(manager)[1]["Options"][VXLANID] == "1048576"
    status, again = manager.call("NetworkDriver.AllocateNetwork", {
        "NetworkID": SWARM_NET, "Options": answer["Options"], "IPv4Data": [{"Pool": SUBNET}]})
    assert status == 200 and again["Options"] == answer["Options"]
    # Another Swarm network gets another VNI, even allocated by another manager.
    assert allocate(worker, OTHER_NET, "10.61.0.0/24")[1]["Options"][VXLANID] == "1048577"
    # The nodes create the network from the driver state, with the manager's NetworkID.
    for host in (manager, worker):
        host.ok("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": SUBNET, "Options": {},
                                           "V6": False})
        status, err = host.call("NetworkDriver.CreateNetwork", {
            "NetworkID": SWARM_NET, "Options": {GENERIC: answer["Options"]},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": SUBNET, "Gateway": "10.60.0.1/24"}]})
        assert status == 200, err
        assert host.vxlan(SWARM_NET).vni == 1048576
    # The nodes' networks go (no task left on them): the VNI stays Swarm's.
    for host in (manager, worker):
        host.ok("NetworkDriver.DeleteNetwork", {"NetworkID": SWARM_NET})
    assert "1048576" in vni_claims(store)
    assert allocate(worker, "z" * 25, "10.62.0.0/24")[1]["Options"][VXLANID] == "1048578"
    # FreeNetwork gives back exactly this network's VNI; repeated, it changes nothing.
    manager.ok("NetworkDriver.FreeNetwork", {"NetworkID": SWARM_NET})
    manager.ok("NetworkDriver.FreeNetwork", {"NetworkID": SWARM_NET})
    assert sorted(vni_claims(store)) == ["1048577", "1048578"]


def test_a_vni_given_by_the_user_is_claimed_and_echoed(hosts, store):
    manager = hosts.add("h1", "198.18.0.11", scope="global")
    status, answer = allocate(manager, vni="5000")
    assert status == 200 and answer["Options"] == {"type": "overlay", "vni": "5000"}
    status, err = allocate(manager, OTHER_NET, "10.61.0.0/24", vni="5000")
    assert status == 409 and "VNI 5000 is already used" in err["Err"]


@pytest.mark.parametrize("options, named", [
    ({"type": "overlay", "vni": "0"}, "vni='0'"),
    ({"type": "overlay", "colour": "blue"}, "unknown option 'colour'"),
    ({"type": "tunnel"}, "type='tunnel'"),
])
def test_bad_options_are_refused_naming_the_value_and_nothing_is_claimed(hosts, store, options, named):
    manager = hosts.add("h1", "198.18.0.11", scope="global")
    status, err = manager.call("NetworkDriver.AllocateNetwork", {
        "NetworkID": SWARM_NET, "Options": options, "IPv4Data": [{"Pool": SUBNET}]})
    assert status == 400 and named in err["Err"], err
    assert vni_claims(store) == {}


def test_a_bad_body_is_refused_naming_the_field(hosts, store):
    manager = hosts.add("h1", "198.18.0.11", scope="global")
    for body, named in (({"NetworkID": SWARM_NET, "Options": {"type": 7}}, "Options['type']"),
                        ({"NetworkID": SWARM_NET, "Options": {"type": "overlay"}, "IPv4Data": [{"Pool": "x"}]}, "'x'"),
                        ({"Options": {}}, "NetworkID")):
        status, err = manager.call("NetworkDriver.AllocateNetwork", body)
        assert status == 400 and named in err["Err"], (body, err)
    assert vni_claims(store) == {}


def test_bridge_networks_are_echoed_without_a_vni(hosts, store):
    manager = hosts.add("h1", "198.18.0.11", scope="global")
    status, answer = manager.call("NetworkDriver.AllocateNetwork", {
        "NetworkID": SWARM_NET, "Options": {"mtu": "1400"}, "IPv4Data": [{"Pool": SUBNET}]})
    assert status == 200 and answer == {"Options": {"mtu": "1400"}}
    assert vni_claims(store) == {}


def test_two_managers_allocating_at_once_never_share_a_vni(hosts, store):
    import threading
    managers = [hosts.add(f"h{i}", f"198.18.0.1{i}", scope="global") for i in range(1, 4)]
    answers: dict[str, str] = {}

    def run(i: int) -> None:
        nid = f"{i:025d}"
        status, answer = allocate(managers[i % 3], nid, f"10.{70 + i}.0.0/24")
        assert status == 200
        answers[nid] = answer["Options"][VXLANID]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(answers.values())) == 12 and len(vni_claims(store)) == 12


class FlakyStore(MemoryStore):
    """A transaction that lands but whose answer is lost once (Consul cut off mid-call)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next = False

    def transaction(self, ops):
        done = super().transaction(ops)
        if self.lose_next and any(op.key.startswith(keys.overlay_vnis()) for op in ops):
            self.lose_next = False
            raise BackendUnavailable("consul at 127.0.0.1:8500: timed out")
        return done


def _fenced_writes(host):
    return [host.client.overlay.registry.writes]


def test_a_vni_claim_that_landed_after_the_call_failed_is_undone_not_duplicated():
    store = FlakyStore()
    hosts = FakeOverlayHosts(store)
    try:
        manager = hosts.add("h1", "198.18.0.11", scope="global")
        store.lose_next = True
        status, err = allocate(manager)
        assert status == 503 and "consul" in err["Err"]
        # Swarm retries: the late claim was settled away (the fence moved) or is reused;
        # either way one claim, one VNI.
        status, answer = allocate(manager)
        assert status == 200
        claims = vni_claims(store)
        assert list(claims) == [answer["Options"][VXLANID]]
        assert SWARM_NET in claims[answer["Options"][VXLANID]]
        # Once the store answers, the doubtful write is settled: the claim Swarm now relies
        # on must survive that.
        for writes in _fenced_writes(manager):
            writes.settle()
        assert list(vni_claims(store)) == [answer["Options"][VXLANID]]
    finally:
        hosts.close()


# --- IPAM: a Swarm allocator restoring its addresses -----------------------------------
def test_a_new_swarm_leader_asking_again_for_its_tasks_addresses_takes_them_over():
    """After a leader change (or a manager's restart) Swarm's allocator requests the pool
    anew and then every address its raft log assigned. Those are granted and become the new
    allocator's claims (its release frees them); a second request under the same pool hold
    is still a conflict, and so is any in the local space."""
    from ipam_driver.service import IpamService
    from tests.fakes.ipam_client import DockerIpam
    store = MemoryStore()
    old, new = (DockerIpam(IpamService(store, h, block_size=0)) for h in ("h1", "h2"))
    gw = {"RequestAddressType": "com.docker.network.gateway"}
    old_pool, _ = old.request_pool("GlobalDefault", SUBNET, "", {}, False)
    old.request_address(old_pool, "", gw)
    task = old.request_address(old_pool, "", {}).split("/")[0]
    with pytest.raises(Exception, match="already in use"):
        old.request_address(old_pool, task, {})  # the same allocator: a conflict
    new_pool, _ = new.request_pool("GlobalDefault", SUBNET, "", {}, False)
    assert new.request_address(new_pool, "10.60.0.1", gw).startswith("10.60.0.1/")
    assert new.request_address(new_pool, task, {}).split("/")[0] == task
    claim = json.loads(store.get(keys.ipam_addr("GlobalDefault", SUBNET, task)).value)
    assert claim["host"] == "h2" and claim["hold"] == str(new_pool).rsplit("@", 1)[1]
    fresh = new.request_address(new_pool, "", {}).split("/")[0]
    assert fresh not in (task, "10.60.0.1")  # nothing claimed is handed out again
    new.release_address(new_pool, task)
    assert store.get(keys.ipam_addr("GlobalDefault", SUBNET, task)) is None
    # The local space keeps the rule: one owner per address.
    local_old, _ = old.request_pool("LocalDefault", "10.61.0.0/24", "", {}, False)
    local_new, _ = new.request_pool("LocalDefault", "10.61.0.0/24", "", {}, False)
    taken = old.request_address(local_old, "", {}).split("/")[0]
    with pytest.raises(Exception, match="already in use"):
        new.request_address(local_new, taken, {})


def test_a_swarm_network_reaching_a_local_scope_plugin_is_refused_naming_pynet_scope_global(hosts, store):
    """With the local scope Swarm does not allocate a --scope swarm network: each node gets
    neither its options nor its pools (a bridge with Docker's own IPAM, observed on the bed),
    so its tasks could not reach other nodes'. The node's CreateNetwork carries Swarm's
    network ID: refused, naming the fix; a network dockerd made itself is served as ever."""
    node = hosts.add("h1", "198.18.0.11")  # the default scope, local
    status, answer = node.call("NetworkDriver.CreateNetwork", {
        "NetworkID": SWARM_NET, "Options": {GENERIC: {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "198.19.247.64/26",
                      "Gateway": "198.19.247.65/26"}]})
    assert status == 400, answer
    assert f"network {SWARM_NET} is a swarm network" in answer["Err"]
    assert "PYNET_SCOPE=global" in answer["Err"] and "docs/swarm.md" in answer["Err"]
    assert node.netlink.world == {} and list(store.list(keys.networks("h1"))) == []
    local = "f" * 64
    assert node.call("NetworkDriver.CreateNetwork", {
        "NetworkID": local, "Options": {GENERIC: {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "198.19.247.64/26",
                      "Gateway": "198.19.247.65/26"}]})[0] == 200
    # With the global scope the same call is Swarm's normal path.
    swarm_node = hosts.add("h2", "198.18.0.12", scope="global")
    assert swarm_node.call("NetworkDriver.CreateNetwork", {
        "NetworkID": SWARM_NET, "Options": {GENERIC: {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "198.19.246.64/26",
                      "Gateway": "198.19.246.65/26"}]})[0] == 200
