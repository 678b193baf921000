"""The overlay kind's part of `pynet doctor` and `pynet networks` (OverlayKind.check, check.py,
describe, owned_links): two simulated hosts over one store and strict fake kernels
(tests/harness/overlay_fake.py), the kind as the app wired it."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from driver import naming
from driver.kinds.base import RECREATE, Carrier
from driver.kinds.overlay.check import PEERS_FIX, STORE_FIX
from pynet_core.store import bad_records, keys
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import FakeOverlayHosts

N1, N2 = "1" * 64, "2" * 64
E1, E2 = "a" * 64, "b" * 64
SPACE, SUBNET = "LocalDefault", "10.50.0.0/24"
MAC_E2 = "02:42:0a:32:00:03"
NETNS, VXLAN, VETH = naming.overlay_netns(N1), naming.vxlan(N1), naming.host_veth(E1)


@pytest.fixture
def h1():
    """h1 and h2 on one overlay, one endpoint each, synced; h1 is checked."""
    bad_records._logged.clear()
    hosts = FakeOverlayHosts(MemoryStore())
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    assert h1.create_network(N1, SUBNET)[0] == 200 and h2.create_network(N2, SUBNET)[0] == 200
    h1.create_endpoint(N1, E1, "10.50.0.2/24")
    h2.create_endpoint(N2, E2, "10.50.0.3/24")
    h1.sync(), h2.sync()
    yield h1
    hosts.close()


def check(host):
    service = host.client.network
    found = service.kinds["overlay"].check(service.ledger.network(N1), service.ledger.endpoints(N1),
                                           lambda eid: None)
    return [(d.what, d.fix) for d in found]


def test_an_overlay_as_made_and_synced_has_no_difference(h1):
    assert check(h1) == []


def test_a_lost_namespace_is_the_one_difference(h1):
    h1.netlink.remove_netns(NETNS)
    assert check(h1) == [(f"namespace {NETNS} of overlay {N1[:12]} is missing", RECREATE)]


def test_without_its_vxlan_device_the_peers_are_not_compared(h1):
    h1.inside(N1).remove_link(VXLAN)
    assert check(h1) == [(f"VXLAN device {VXLAN} in {NETNS} is missing", RECREATE)]


def test_another_vni_in_the_kernel_and_a_lost_veth_are_named(h1):
    inside = h1.inside(N1)
    vni = h1.client.network.ledger.network(N1).vni
    inside.vxlans[VXLAN] = replace(inside.vxlans[VXLAN], vni=vni + 1)
    inside.remove_link(VETH)
    assert check(h1) == [
        (f"VXLAN device {VXLAN} carries VNI {vni + 1}, the record says {vni}", RECREATE),
        (f"veth {VETH} of endpoint {E1[:12]} is missing in {NETNS}", "restart the container")]


def test_entries_missing_or_extra_against_the_peers_are_named(h1):
    inside = h1.inside(N1)
    inside.neigh[naming.OVERLAY_BRIDGE].pop("10.50.0.3")
    inside.neigh[naming.OVERLAY_BRIDGE]["10.50.0.9"] = "02:42:0a:32:00:09"
    assert check(h1) == [
        (f"neighbour entry missing in {NETNS}: 10.50.0.3 at {MAC_E2}", PEERS_FIX),
        (f"neighbour entry of no peer in {NETNS}: 10.50.0.9 at 02:42:0a:32:00:09", PEERS_FIX)]


def test_a_record_the_store_holds_but_pynet_ignores_is_a_difference(h1):
    key = keys.overlay_peer(SPACE, SUBNET, "h2", E2)
    h1.store.cas(key, json.dumps({"host": "h2"}), h1.store.get(key).version)
    found = check(h1)
    assert found and found[0][0].startswith(f"overlay {SUBNET} ({SPACE}): store record {key} is ignored")
    assert found[0][1] == STORE_FIX


def test_describe_and_owned_links(h1):
    kind, net = h1.client.network.kinds["overlay"], h1.client.network.ledger.network(N1)
    assert kind.describe(net) == Carrier(f"vni {net.vni}")
    assert kind.describe(replace(net, vni=None)) == Carrier("vni -")
    # The host ends live in the network's namespace: only the container ends are here.
    eps = h1.client.network.ledger.endpoints(N1)
    assert kind.owned_links(net, eps) == {VXLAN, naming.peer_veth(E1)}
