"""Overlay networks through the app, on hosts that share one store (standing in for Consul)
and each have their own strict fake kernel: identity, the VNI allocator, peers, liveness,
restart. The real kernel's side is proven in tests/kernel/test_overlay.py."""
from __future__ import annotations

import time

import pytest

from driver import naming
from driver.netlink.api import FLOOD_MAC
from pynet_core.errors import BackendUnavailable
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.harness.app_client import app_client
from tests.harness.overlay_fake import GENERIC, FakeOverlayHosts

N1, N2, N3 = "1" * 64, "2" * 64, "3" * 64
SUBNET = "10.50.0.0/24"
MAC2, MAC3 = "02:42:0a:32:00:02", "02:42:0a:32:00:03"


@pytest.fixture
def store():
    return MemoryStore()


@pytest.fixture
def hosts(store):
    made = FakeOverlayHosts(store)
    yield made
    made.close()


def overlay_keys(store):
    return sorted(e.key for e in store.list("v1/overlay"))


# --- refusals ------------------------------------------------------------------------
def test_the_released_plugin_serves_overlays_but_refuses_them_on_the_local_store():
    # The composition root's defaults, as `pynet serve` builds it (--store local).
    client = app_client(host_id="h1")
    assert client.overlay is not None
    assert client.services["background"].stops == []  # no peer watcher on a private store
    status, answer = client("NetworkDriver.CreateNetwork", {
        "NetworkID": N1, "Options": {GENERIC: {"type": "overlay"}}, "IPv4Data": [{"Pool": SUBNET}]})
    assert status == 400 and "overlay networks need --store consul" in answer["Err"]


def test_the_consul_store_starts_the_peer_watcher_by_default():
    from pynet.app import Deps
    from pynet.settings import Settings
    from tests.fakes.firewall import RecordingFirewall
    from tests.fakes.netlink import FakeNetlink
    deps = Deps(store=MemoryStore(), netlink=FakeNetlink(), firewall=RecordingFirewall())
    client = app_client(deps, settings=Settings(host_id="h1", store="consul"))
    try:
        assert len(client.services["background"].stops) == 2  # the peer watcher, the heartbeat
    finally:
        client.services["background"].stop()


def test_a_plugin_built_without_the_overlay_kind_says_so():
    client = app_client(host_id="h1", overlay=False)
    status, answer = client("NetworkDriver.CreateNetwork", {
        "NetworkID": N1, "Options": {GENERIC: {"type": "overlay"}}, "IPv4Data": [{"Pool": SUBNET}]})
    assert status == 400 and "overlay networks are not available" in answer["Err"]


def test_overlay_needs_the_consul_store(hosts):
    h1 = hosts.add("h1", "198.18.0.11", store_kind="local")
    status, answer = h1.create_network(N1, SUBNET)
    assert status == 400 and "overlay networks need --store consul" in answer["Err"]
    assert h1.netlink.world == {} and overlay_keys(hosts.store) == []


def test_overlay_needs_a_subnet_and_ipv4(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    status, answer = h1.create_network(N1, None)
    assert status == 400 and "needs exactly one --subnet" in answer["Err"]
    status, answer = h1.call("NetworkDriver.CreateNetwork", {
        "NetworkID": N1, "Options": {GENERIC: {"type": "overlay"}, "com.docker.network.enable_ipv6": True},
        "IPv4Data": [{"Pool": SUBNET}], "IPv6Data": [{"Pool": "fd00:50::/64"}]})
    assert status == 400 and "IPv4 only" in answer["Err"]


def test_a_pool_from_another_ipam_driver_is_refused_naming_the_fix(hosts):
    """Docker's own IPAM on each host would hand out the same addresses on every host of the
    overlay, silently (issue 18): the pool must be one this host's pynet IPAM gave out."""
    h1 = hosts.add("h1", "198.18.0.11")
    status, answer = h1.create_network(N1, SUBNET, pool_from_pynet=False)
    assert status == 400, answer
    assert "overlay networks need --ipam-driver pynet" in answer["Err"]
    assert f"{SUBNET} in address space LocalDefault" in answer["Err"]
    assert "PYNET_SCOPE=global" in answer["Err"]
    assert h1.netlink.world == {} and overlay_keys(hosts.store) == []
    # Another host holding the pool does not make it this host's.
    h2 = hosts.add("h2", "198.18.0.12")
    assert h2.create_network(N1, SUBNET)[0] == 200
    assert h1.create_network(N1, SUBNET, pool_from_pynet=False)[0] == 400
    # Asked of pynet's IPAM first, as Docker does with --ipam-driver pynet: served.
    assert h1.create_network(N1, SUBNET)[0] == 200


def test_mtu_above_the_underlays_minus_50_is_refused_with_the_reason(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    status, answer = h1.create_network(N1, SUBNET, mtu="1451")
    assert status == 400 and "at most 1450" in answer["Err"] and "eth0 (MTU 1500)" in answer["Err"]
    assert h1.create_network(N1, SUBNET, mtu="1400")[0] == 200
    assert h1.vxlan(N1).mtu == 1400


def test_a_vtep_that_cannot_be_found_names_the_flag(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    h1.netlink.addrs.clear()
    status, answer = h1.create_network(N1, SUBNET)
    assert status == 400 and "--data-path-addr" in answer["Err"]


# --- identity and the VNI allocator ---------------------------------------------------
def test_the_same_subnet_on_two_hosts_is_one_overlay_with_one_allocated_vni(hosts):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    assert h1.create_network(N1, SUBNET)[0] == 200
    assert h2.create_network(N2, SUBNET)[0] == 200  # another NetworkID, the same overlay
    for host, nid in ((h1, N1), (h2, N2)):
        vx = host.vxlan(nid)
        assert (vx.vni, vx.local, vx.port, vx.learning, vx.suppress_arp, vx.mtu, vx.master) == \
            (4096, host.vtep, 4789, False, True, 1450, naming.OVERLAY_BRIDGE)
        assert host.netlink.link(naming.vxlan(nid)) is None  # moved into the network's namespace
    assert h1.create_network(N3, "10.51.0.0/24")[0] == 200
    assert h1.vxlan(N3).vni == 4097
    # Head-end replication both ways once the watchers have synced.
    h1.sync(), h2.sync()
    assert h1.fdb(N1) == {(FLOOD_MAC, "198.18.0.12")} and h2.fdb(N2) == {(FLOOD_MAC, "198.18.0.11")}
    assert h1.fdb(N3) == set()


def test_another_vni_or_mtu_for_the_same_subnet_is_refused_naming_the_holders(hosts):
    h1, h2, h3 = (hosts.add(f"h{i}", f"198.18.0.1{i}") for i in (1, 2, 3))
    assert h1.create_network(N1, SUBNET, vni="5000")[0] == 200
    assert h2.create_network(N2, SUBNET)[0] == 200
    status, answer = h3.create_network(N3, SUBNET, vni="5001")
    assert status == 409 and "by h1, h2" in answer["Err"] and "VNI 5001" in answer["Err"]
    status, answer = h3.create_network(N3, SUBNET, mtu="1400")
    assert status == 409 and "MTU 1400" in answer["Err"] and "h1, h2" in answer["Err"]
    assert h3.netlink.world == {} and h3.client.network.networks() == []
    # Another subnet may not take a VNI that is in use.
    status, answer = h3.create_network(N3, "10.60.0.0/24", vni="5000")
    assert status == 409 and "VNI 5000 is already used by overlay 10.50.0.0/24" in answer["Err"]
    assert h3.create_network(N3, SUBNET, vni="5000", mtu="1450")[0] == 200


def test_one_host_joins_an_overlay_once(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    assert h1.create_network(N1, SUBNET)[0] == 200
    status, answer = h1.create_network(N2, SUBNET)
    assert status == 409 and "already has pynet network 111111111111" in answer["Err"]


def test_the_last_host_to_delete_the_network_frees_the_vni_and_leaves_no_key(hosts, store):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    h1.create_network(N1, SUBNET), h2.create_network(N2, SUBNET)
    _wait(lambda: all(store.get(keys.overlay_alive(h)) for h in ("h1", "h2")), "both heartbeats")
    h1.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N1})
    assert store.get(keys.overlay_vni(4096)) is not None
    assert naming.overlay_netns(N1) not in h1.netlink.world
    h2.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N2})
    assert [k for k in overlay_keys(store) if not k.startswith("v1/overlay-alive/")] == []
    assert h2.netlink.world == {}
    assert h1.create_network(N3, "10.70.0.0/24")[0] == 200 and h1.vxlan(N3).vni == 4096  # freed
    h1.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N3})
    # The heartbeats go too, once each host's watcher has seen it left its last overlay
    # (regression: they stayed in the store for good).
    _wait(lambda: overlay_keys(store) == [], "the heartbeat keys gone")
    # A host that joins again beats again at once.
    assert h1.create_network(N1, SUBNET)[0] == 200
    _wait(lambda: store.get(keys.overlay_alive("h1")) is not None, "h1's heartbeat back")


def _wait(ready, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"not in {timeout}s: {what}"
        time.sleep(0.02)


def test_a_failed_kernel_step_leaves_no_membership_behind(hosts, store):
    h1 = hosts.add("h1", "198.18.0.11")
    h1.netlink.fail_on.add("add_vxlan")
    assert h1.create_network(N1, SUBNET)[0] == 500
    assert overlay_keys(store) == [] and h1.netlink.world == {}
    h1.netlink.fail_on.clear()
    assert h1.create_network(N1, SUBNET)[0] == 200 and h1.vxlan(N1).vni == 4096


# --- peers ---------------------------------------------------------------------------
def test_endpoints_become_fdb_and_neighbour_entries_on_the_other_hosts_and_go_with_them(hosts):
    h1, h2, h3 = (hosts.add(f"h{i}", f"198.18.0.1{i}") for i in (1, 2, 3))
    for host, nid in ((h1, N1), (h2, N2), (h3, N3)):
        assert host.create_network(nid, SUBNET)[0] == 200
    joined = h1.create_endpoint(N1, "a" * 64, "10.50.0.2/24")
    assert joined["InterfaceName"] == {"SrcName": "pnc" + "a" * 12, "DstPrefix": "eth"}
    assert "Gateway" not in joined and not joined.get("DisableGatewayService")  # docker_gwbridge
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")
    for host in (h1, h2, h3):
        host.sync()
    assert h3.fdb(N3) == {(FLOOD_MAC, "198.18.0.11"), (FLOOD_MAC, "198.18.0.12"),
                          (MAC2, "198.18.0.11"), (MAC3, "198.18.0.12")}
    assert h3.neighbours(N3) == {("10.50.0.2", MAC2), ("10.50.0.3", MAC3)}
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3)}  # never its own endpoints
    link = h1.inside(N1).link(naming.host_veth("a" * 64))
    assert (link.master, link.mtu) == (naming.OVERLAY_BRIDGE, 1450)
    assert h1.netlink.link(naming.peer_veth("a" * 64)).mtu == 1450
    h1.delete_endpoint(N1, "a" * 64)
    h3.sync()
    assert h3.neighbours(N3) == {("10.50.0.3", MAC3)}
    assert (MAC2, "198.18.0.11") not in h3.fdb(N3) and (FLOOD_MAC, "198.18.0.11") in h3.fdb(N3)
    assert h1.inside(N1).link(naming.host_veth("a" * 64)) is None


def test_the_background_watcher_programs_new_peers_without_being_asked(hosts):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    h1.create_network(N1, SUBNET), h2.create_network(N2, SUBNET)
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")
    from tests.harness.wait import wait_until as wait_for
    wait_for(lambda: ("10.50.0.3", MAC3) in h1.neighbours(N1), timeout=5,
             what="h1's watcher programming h2's endpoint")


def test_an_endpoint_fails_fast_naming_the_store_when_it_is_unreachable(hosts, store):
    h1 = hosts.add("h1", "198.18.0.11")
    h1.create_network(N1, SUBNET)
    real = store.transaction

    def down(ops):
        raise BackendUnavailable("consul at 10.0.0.5:8500 could not be reached (a test outage)")
    store.transaction = down
    try:
        status, answer = h1.call("NetworkDriver.CreateEndpoint", {
            "NetworkID": N1, "EndpointID": "a" * 64, "Interface": {"Address": "10.50.0.2/24"}})
    finally:
        store.transaction = real
    assert status == 503 and "consul at 10.0.0.5:8500" in answer["Err"]
    assert h1.netlink.link(naming.peer_veth("a" * 64)) is None


def test_a_dead_hosts_entries_are_withdrawn_after_the_timeout_and_its_claims_stay(hosts, store):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    h1.create_network(N1, SUBNET), h2.create_network(N2, SUBNET)
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")
    h2.stop()  # h2 dies: its heartbeat stands still from here
    watcher = h1.client.overlay.watcher
    now = [time.monotonic()]  # what it has judged so far was on the real clock
    watcher.clock = lambda: now[0]
    h1.sync()
    assert ("10.50.0.3", MAC3) in h1.neighbours(N1)
    now[0] += watcher.liveness.timeout + 1
    h1.sync()
    assert h1.neighbours(N1) == set() and h1.fdb(N1) == set()
    assert store.get(keys.overlay_peer("LocalDefault", SUBNET, "h2", "b" * 64)) is not None
    h2.client.overlay.registry.beat()  # h2 is back
    h1.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3)}


def test_a_restarted_plugin_reconciles_entries_and_its_own_records(hosts, store):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    h1.create_network(N1, SUBNET), h2.create_network(N2, SUBNET)
    h1.create_endpoint(N1, "a" * 64, "10.50.0.2/24")
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")
    h2.create_endpoint(N2, "c" * 64, "10.50.0.4/24")
    h2.sync()
    h2.stop()  # killed: the kernel keeps its entries
    assert h2.neighbours(N2) == {("10.50.0.2", MAC2)}
    h1.delete_endpoint(N1, "a" * 64)
    h1.create_endpoint(N1, "d" * 64, "10.50.0.5/24")
    # An endpoint h2's records lost while it was down: its peer record must go too.
    h2.client.network.ledger.forget_endpoint(h2.client.network.ledger.endpoint(N2, "c" * 64))
    h2.restart()
    from tests.harness.wait import wait_until as wait_for
    wait_for(lambda: h2.neighbours(N2) == {("10.50.0.5", "02:42:0a:32:00:05")}, timeout=5,
             what="h2 reconciled after its restart")
    assert store.get(keys.overlay_peer("LocalDefault", SUBNET, "h2", "c" * 64)) is None
    assert store.get(keys.overlay_peer("LocalDefault", SUBNET, "h2", "b" * 64)) is not None
    h1.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3)}


def test_restore_remakes_a_lost_namespace(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    h1.create_network(N1, SUBNET)
    h1.netlink.remove_netns(naming.overlay_netns(N1))  # a reboot
    h1.restart()
    from tests.harness.wait import wait_until as wait_for
    wait_for(lambda: h1.client.gate.restored, timeout=5, what="restore")
    assert h1.vxlan(N1).vni == 4096
