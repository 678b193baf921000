"""Overlay peers at scale, over the strict fake kernel: a sync is one batch per namespace
(one socket, one dump of each table), one refused entry does not stop the others, a slow
sync of one overlay never holds up CreateNetwork of another, and a call that runs out of
time names what used it. The real kernel's side: tests/kernel/test_overlay.py and the
netlink contract, tests/contract/test_netlink_contract.py; the timings: bench/overlay_peers.py."""
from __future__ import annotations

import threading
import time

import pytest

from driver import naming
from driver.netlink.api import FLOOD_MAC, FdbEntry, Neighbour
from driver.kinds.overlay.applier import DeviceBusy, PeerApplier
from driver.kinds.overlay.peers import Desired
from pynet_core import deadline
from pynet_core.errors import BackendUnavailable
from pynet_core.store.consul import ConsulStore
from pynet_core.store.memory import MemoryStore
from tests.fakes.netlink import FakeNetlink
from tests.harness.overlay_fake import FakeOverlayHosts

NS, VX, BR = "pno-test", "pnxtest", naming.OVERLAY_BRIDGE
N1, N2, N3, N4 = "1" * 64, "2" * 64, "3" * 64, "4" * 64


def device() -> FakeNetlink:
    host = FakeNetlink()
    host.ensure_netns(NS)
    inside = host.within(NS)
    inside.ensure_bridge(BR, 1450, [])
    host.add_vxlan(VX, 4242, "198.18.0.11", 4789, 1450, BR, netns=NS)
    return host


def peers(hosts: int, each: int) -> Desired:
    fdb, neigh = set(), set()
    for h in range(hosts):
        vtep = f"198.18.0.{20 + h}"
        fdb.add(FdbEntry(FLOOD_MAC, vtep))
        for i in range(each):
            mac = f"02:42:0a:{h:02x}:{i >> 8:02x}:{i & 0xff:02x}"
            fdb.add(FdbEntry(mac, vtep))
            neigh.add(Neighbour(f"10.{60 + h}.{i >> 8}.{i & 0xff}", mac))
    return Desired(frozenset(fdb), frozenset(neigh))


def kernel(host: FakeNetlink) -> Desired:
    inside = host.within(NS)
    return Desired(frozenset(inside.fdb_entries(VX)), frozenset(inside.neighbours(BR)))


# --- one batch per namespace per sync -----------------------------------------------------
def test_programming_and_withdrawing_3000_peers_is_one_socket_and_one_dump_of_each_table():
    host = device()
    inside = host.within(NS)
    applier = PeerApplier(host)
    want = peers(3, 1000)
    inside.sockets = inside.dumps = 0
    changes = applier.apply(NS, VX, BR, want)
    assert changes is not None and len(changes.fdb_add) == 3003 and len(changes.neigh_add) == 3000
    assert (inside.sockets, inside.dumps) == (1, 2)  # not one per entry
    assert kernel(host) == want
    inside.sockets = inside.dumps = 0
    gone = applier.apply(NS, VX, BR, Desired(frozenset(), frozenset()))
    assert gone is not None and len(gone.fdb_remove) == 3003 and len(gone.neigh_remove) == 3000
    assert (inside.sockets, inside.dumps) == (1, 2)
    assert kernel(host) == Desired(frozenset(), frozenset())


def test_one_refused_entry_does_not_stop_the_others_and_is_counted_and_tried_again(caplog):
    host = device()
    inside = host.within(NS)
    applier = PeerApplier(host)
    want = peers(1, 50)
    bad_mac = "02:42:0a:00:00:07"
    bad_ip = "10.60.0.9"
    inside.refuse_entries |= {bad_mac, bad_ip}
    applier.apply(NS, VX, BR, want)
    held = kernel(host)
    assert held.fdb == {e for e in want.fdb if e.mac != bad_mac}
    assert held.neighbours == {n for n in want.neighbours if n.ip != bad_ip}
    assert applier.failed_entries == 2
    assert f"adding FDB entry {bad_mac}" in caplog.text and f"adding neighbour {bad_ip}" in caplog.text
    inside.refuse_entries.clear()  # the kernel takes them now: the next sync adds just those
    again = applier.apply(NS, VX, BR, want)
    assert again is not None and again.count() == 2 and kernel(host) == want


def test_a_view_older_than_one_already_applied_is_never_applied():
    host = device()
    applier = PeerApplier(host)
    old, new = peers(1, 3), peers(2, 3)
    applier.apply(NS, VX, BR, new, seq=2)
    assert not applier.apply(NS, VX, BR, old, seq=1)  # read earlier, arrived later
    assert kernel(host) == new
    applier.apply(NS, VX, BR, old, seq=3)
    assert kernel(host) == old


def test_a_call_waits_for_another_sync_of_its_device_only_as_long_as_it_is_told():
    applier = PeerApplier(device())
    held = applier._lock((NS, VX))
    with held:  # another sync of this very device, not finishing
        started = time.monotonic()
        with pytest.raises(DeviceBusy, match="being programmed by another sync"):
            applier.apply(NS, VX, BR, peers(1, 1), wait=0.2)
        assert time.monotonic() - started < 1.0


# --- a slow sync of one overlay never holds up another ----------------------------------
@pytest.fixture
def hosts():
    made = FakeOverlayHosts(MemoryStore())
    yield made
    made.close()


def test_a_slow_sync_of_overlay_a_does_not_hold_up_createnetwork_or_createendpoint_of_overlay_b(hosts):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    assert h1.create_network(N1, "10.50.0.0/24")[0] == 200
    assert h2.create_network(N2, "10.50.0.0/24")[0] == 200
    assert h2.create_network(N4, "10.51.0.0/24")[0] == 200
    # Overlay A's kernel on h1 hangs in the middle of programming its peers.
    a = h1.inside(N1)
    entered, release = threading.Event(), threading.Event()
    change_peers = a.change_peers

    def slow_change_peers(*args, **kwargs):
        entered.set()
        release.wait(30)
        return change_peers(*args, **kwargs)

    a.change_peers = slow_change_peers
    h2.create_endpoint(N2, "e" * 64, "10.50.0.3/24")  # something for h1 to program in A
    background = threading.Thread(target=h1.sync)  # the watcher's sync of every overlay
    background.start()
    try:
        assert entered.wait(5), "the sync never reached overlay A's kernel"
        answer: list = []

        def create_b() -> None:
            answer.append(h1.create_network(N3, "10.51.0.0/24"))
            answer.append(h1.create_endpoint(N3, "f" * 64, "10.51.0.2/24"))

        call = threading.Thread(target=create_b)
        started = time.monotonic()
        call.start()
        call.join(5)
        took = time.monotonic() - started
        assert len(answer) == 2 and answer[0][0] == 200, \
            f"CreateNetwork/CreateEndpoint of B still waiting after {took:.1f}s: {answer}"
        assert took < 2.0
        assert not release.is_set() and background.is_alive()  # A's sync really was still stuck
        assert h1.fdb(N3) == {(FLOOD_MAC, "198.18.0.12")}  # B got its peers before answering
    finally:
        release.set()
        background.join(10)
    # A finished once its kernel answered: the flood entry and the endpoint's.
    assert len(h1.fdb(N1)) == 2 and (FLOOD_MAC, "198.18.0.12") in h1.fdb(N1)


# --- an error names its real cause ----------------------------------------------------
def test_a_store_call_refused_for_lack_of_time_names_what_used_the_time():
    store = ConsulStore("127.0.0.1:1")  # nothing listens: had it been asked, it would say so
    with deadline.budget(0.3):
        with deadline.spending("programming the peers of overlay device pnxabc into the kernel"):
            time.sleep(0.35)
        with pytest.raises(BackendUnavailable) as raised:
            store.get("v1/anything")
    message = raised.value.message
    assert "programming the peers of overlay device pnxabc into the kernel" in message
    assert "was not the cause" in message and "answering too slowly" not in message


def test_time_spent_elsewhere_belongs_to_its_call_only():
    with deadline.budget(1.0):
        with deadline.spending("waiting for the kernel"):
            pass
        assert deadline.spent_elsewhere()[0] == "waiting for the kernel"
        with deadline.budget(5.0):  # nested: the same call, the same record
            assert deadline.spent_elsewhere()[0] == "waiting for the kernel"
    assert deadline.spent_elsewhere() is None
    with deadline.budget(1.0):
        assert deadline.spent_elsewhere() is None  # a new call starts clean
