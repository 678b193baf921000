"""Callers of the netlink API catch the error they mean (driver/netlink/api.py names them)
and let the others through: a namespace or device already gone is passed over, a kernel
refusal is a failure, said as one."""
from __future__ import annotations

import logging

import pytest

from driver import naming
from driver.kinds.overlay.applier import PeerApplier
from driver.kinds.overlay.peers import Desired
from driver.netlink.api import FLOOD_MAC, FdbEntry
from pynet_core.store.memory import MemoryStore
from tests.fakes.netlink import FakeNetlink
from tests.harness.overlay_fake import FakeOverlayHosts

NS, VX, BR = "pno-test", "pnxtest", naming.OVERLAY_BRIDGE
NID, EID1, EID2 = "5" * 64, "6" * 64, "7" * 64
WANT = Desired(frozenset({FdbEntry(FLOOD_MAC, "198.18.0.12")}), frozenset())


@pytest.fixture
def hosts():
    made = FakeOverlayHosts(MemoryStore())
    yield made
    made.close()


def test_the_applier_passes_over_a_device_not_there_and_warns_of_a_kernel_refusal(caplog):
    host = FakeNetlink()
    with caplog.at_level(logging.DEBUG, logger="driver.kinds.overlay.applier"):
        assert PeerApplier(host).apply(NS, VX, BR, WANT) is None  # no namespace (yet): quietly
        host.ensure_netns(NS)
        host.within(NS).ensure_bridge(BR, 1450, [])
        host.add_vxlan(VX, 4242, "198.18.0.11", 4789, 1450, BR, netns=NS)
        host.within(NS).remove_link(BR)
        assert PeerApplier(host).apply(NS, VX, BR, WANT) is None  # its bridge gone: quietly
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        host.within(NS).ensure_bridge(BR, 1450, [])
        host.within(NS).fail_on.add("peer_entries")
        assert PeerApplier(host).apply(NS, VX, BR, WANT) is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "programming its peers failed: injected failure in peer_entries" in warned[0]


def test_an_overlay_endpoint_whose_namespace_is_gone_is_deleted_but_a_refusal_is_answered(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    assert h1.create_network(NID, "10.50.0.0/24")[0] == 200
    h1.create_endpoint(NID, EID1, "10.50.0.2/24")
    h1.create_endpoint(NID, EID2, "10.50.0.3/24")
    h1.inside(NID).fail_on.add("remove_link")
    h1.ok("NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID1})
    status, answer = h1.call("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID1})
    assert status == 500 and "injected failure in remove_link" in answer["Err"]
    h1.netlink.remove_netns(naming.overlay_netns(NID))  # by hand: its links went with it
    h1.delete_endpoint(NID, EID2)
