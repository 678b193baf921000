"""A hostile store against the whole app (simulated hosts over one shared store and strict
fake kernels, tests/harness/overlay_fake.py): bad and forged records are skipped, the rest of
the overlay is programmed, unrelated calls answer normally, DeleteNetwork cleans up, a
restarted pynet starts. The real kernel's side: tests/kernel/test_overlay.py."""
from __future__ import annotations

import json

import pytest

from driver import naming
from driver.models import READY
from driver.netlink.api import FLOOD_MAC
from pynet import metrics
from pynet_core.store import bad_records, keys
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import FakeOverlayHosts
from tests.harness.wait import wait_until

N1, N2, N3, N4 = "1" * 64, "2" * 64, "3" * 64, "4" * 64
SPACE, SUBNET, OTHER = "LocalDefault", "10.50.0.0/24", "10.51.0.0/24"
MAC2, MAC3 = "02:42:0a:32:00:02", "02:42:0a:32:00:03"
NOT_UTF8 = b'{"host": "h1", "\xff": 1}'.decode("utf-8", "surrogateescape")


@pytest.fixture
def store():
    return MemoryStore()


@pytest.fixture
def hosts(store):
    bad_records._logged.clear()
    made = FakeOverlayHosts(store)
    yield made
    made.close()


@pytest.fixture
def pair(hosts):
    """h1 and h2 on one overlay, one endpoint each, synced."""
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    assert h1.create_network(N1, SUBNET)[0] == 200 and h2.create_network(N2, SUBNET)[0] == 200
    h1.create_endpoint(N1, "a" * 64, "10.50.0.2/24")
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")
    h1.sync(), h2.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3)}
    return h1, h2


def put(store, key, value):
    text = value if isinstance(value, str) else json.dumps(value)
    if not store.create(key, text):
        entry = store.get(key)
        assert store.cas(key, text, entry.version)


def peer(host, eid, ip, mac, vtep, network="9" * 64):
    return {"host": host, "endpoint": eid, "network": network, "ip": ip, "mac": mac, "vtep": vtep}


BAD_PEERS = [
    peer("h2", "d1" * 32, "10.50.0.4", 5, "198.18.0.12"),
    peer("h2", "d2" * 32, "10.50.0.5", None, "198.18.0.12"),
    peer("h2", "d3" * 32, "10.50.0.6", "zz:42:0a:32:00:06", "198.18.0.12"),
    peer("h2", "d4" * 32, "10.50.0.7", "01:00:5e:00:00:07", "198.18.0.12"),
    peer("h2", "d5" * 32, ["10.50.0.8"], "02:42:0a:32:00:08", "198.18.0.12"),
    peer("h2", "d6" * 32, "", "02:42:0a:32:00:09", "198.18.0.12"),
    peer("h2", "d7" * 32, "10.77.0.300", "02:42:0a:32:00:0a", "198.18.0.12"),
    peer("h2", "d8" * 32, "10.50.0.11", "02:42:0a:32:00:0b", "localhost"),
    peer("h2", "d9" * 32, "10.50.0.12", "02:42:0a:32:00:0c", "fd00::1"),
    peer("h2", "da" * 32, "10.50.0.13", "02:42:0a:32:00:0d", "300.1.1.1"),
    peer("h2", "db" * 32, "10.50.0.14", "02:42:0a:32:00:0e", "127.0.0.1"),
    peer("h2", "dc" * 32, "10.50.0.15", "02:42:0a:32:00:0f", "224.0.0.5"),
    peer("h2", "dd" * 32, "10.50.0.16", "02:42:0a:32:00:10", "0.0.0.0"),
    peer("h2", "de" * 32, "10.50.0.17", "02:42:0a:32:00:11", "255.255.255.255"),
    peer("h2", "df" * 32, "10.50.0.18", "02:42:0a:32:00:12", "198.18.0.11"),  # h1's own VTEP
    peer("h2", "e1" * 32, "10.99.0.5", "02:42:0a:32:00:13", "198.18.0.12"),     # outside the subnet
    peer("h2", "e2" * 32, "10.50.0.0", "02:42:0a:32:00:14", "198.18.0.12"),     # network address
    peer("h2", "e3" * 32, "10.50.0.255", "02:42:0a:32:00:15", "198.18.0.12"),   # broadcast
    peer("h2", "e4" * 32, "10.50.0.19", "00:00:00:00:00:00", "198.18.0.12"),    # lladdr 0
    peer("h2", "e5" * 32, "fd00::5", "02:42:0a:32:00:16", "198.18.0.12"),
    peer("h2", "e6" * 32, "10.50.0.2", "02:42:0a:32:00:17", "198.18.0.12"),     # h1's container's IP
    peer("h2", "e7" * 32, "10.50.0.20", "02:42:0a:32:00:02", "198.18.0.12"),    # h1's container's MAC
    peer("h2", "e8" * 32, "10.50.0.21", "02:42:0a:32:00:18", "198.18.0.12"),    # claimed by nobody
]


def plant_bad_records(store):
    for p in BAD_PEERS:
        put(store, keys.overlay_peer(SPACE, SUBNET, "h2", p["endpoint"]), p)
    put(store, keys.overlay_peer(SPACE, SUBNET, "h2", "f1" * 32), NOT_UTF8)
    put(store, keys.overlay_peer(SPACE, SUBNET, "h2", "f2" * 32), "not json")
    put(store, keys.overlay_peer(SPACE, SUBNET, "h2", "f3" * 32), "[1, 2]")
    put(store, keys.overlay_member(SPACE, SUBNET, "h9"), {"host": "h9", "network": "x", "vtep": 5})
    put(store, keys.overlay_vni(77), "null")
    put(store, keys.overlay_alive("h9"), NOT_UTF8)


def test_bad_records_are_skipped_and_the_good_peers_are_programmed_and_stay(store, pair):
    h1, h2 = pair
    counted = metrics.SKIPPED_RECORDS.labels("overlay peer")._value.get()
    plant_bad_records(store)
    h2.create_endpoint(N2, "c" * 64, "10.50.0.30/24")  # a good peer that arrives meanwhile
    h1.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3), ("10.50.0.30", "02:42:0a:32:00:1e")}
    assert h1.fdb(N1) == {(FLOOD_MAC, "198.18.0.12"), (MAC3, "198.18.0.12"), ("02:42:0a:32:00:1e", "198.18.0.12")}
    # h1's own container keeps its bridge entry: no MAC of it went to the VXLAN port.
    assert MAC2 not in {mac for mac, _ in h1.fdb(N1)}
    # Every bad peer counted (pynet_store_records_skipped_total{kind="overlay peer"}).
    assert metrics.SKIPPED_RECORDS.labels("overlay peer")._value.get() - counted >= len(BAD_PEERS) + 3


def test_the_rejections_are_logged_once_with_the_key_and_reason(store, pair, caplog):
    h1, h2 = pair
    h1.stop(), h2.stop()  # no background watcher: the syncs below are the only readers
    plant_bad_records(store)
    for _ in range(3):
        h1.sync()
    lines = [r.message for r in caplog.records if "skipping the overlay peer record" in r.message]
    for p in BAD_PEERS:
        key = keys.overlay_peer(SPACE, SUBNET, "h2", p["endpoint"])
        assert sum(key in line for line in lines) == 1, key
    assert any("d1" * 32 in line and "'mac' must be a string" in line for line in lines)
    assert any("e7" * 32 in line and "this host's endpoints'" in line for line in lines)
    assert any("f1" * 32 in line and "not UTF-8" in line for line in lines)


def test_unrelated_calls_answer_normally_with_bad_records_in_the_store(store, pair, hosts):
    h1, h2 = pair
    plant_bad_records(store)
    assert h1.create_network(N3, OTHER)[0] == 200
    h1.create_endpoint(N3, "3a" * 32, "10.51.0.2/24")
    h1.delete_endpoint(N1, "a" * 64, "10.50.0.2/24")
    h1.create_endpoint(N1, "1a" * 32, "10.50.0.40/24")
    assert h2.call("NetworkDriver.DeleteNetwork", {"NetworkID": N2})[0] == 200


def test_a_restarted_pynet_starts_and_serves_with_bad_records_present(store, pair):
    h1, h2 = pair
    plant_bad_records(store)
    put(store, keys.overlay_peer(SPACE, SUBNET, "h1", "a" * 64), NOT_UTF8)  # its own, broken
    h1.restart()
    wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore with bad records present")
    h1.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3)}
    # Its own broken peer record was written again by restore.
    assert json.loads(store.get(keys.overlay_peer(SPACE, SUBNET, "h1", "a" * 64)).value)["ip"] == "10.50.0.2"
    h2.sync()
    assert h2.neighbours(N2) == {("10.50.0.2", MAC2)}
    assert h1.create_network(N3, OTHER)[0] == 200


def test_delete_network_cleans_up_when_the_definition_is_not_json(store, hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    assert h1.create_network(N1, SUBNET)[0] == 200
    put(store, keys.overlay_def(SPACE, SUBNET), "{definitely not json")
    status, answer = h1.call("NetworkDriver.DeleteNetwork", {"NetworkID": N1})
    assert status == 200, answer
    assert h1.client.network.ledger.network(N1) is None  # not left 'deleting'
    assert [e.key for e in store.list(keys.overlay_all())] == []  # definition and VNI claim too


def test_delete_network_cleans_up_when_its_own_peer_record_is_not_utf8(store, pair):
    h1, h2 = pair
    put(store, keys.overlay_peer(SPACE, SUBNET, "h1", "a" * 64), NOT_UTF8)
    assert h1.call("NetworkDriver.DeleteNetwork", {"NetworkID": N1})[0] == 200
    assert h1.client.network.ledger.network(N1) is None
    assert store.list(keys.overlay_host("h1")) == []
    assert store.get(keys.overlay_def(SPACE, SUBNET)) is not None  # h2 still has it


def test_joining_an_overlay_whose_definition_others_hold_is_unreadable_answers_a_clean_error(store, hosts):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    assert h1.create_network(N1, SUBNET)[0] == 200
    put(store, keys.overlay_def(SPACE, SUBNET), json.dumps({"vni": "4096", "mtu": 1450, "port": 4789}))
    status, answer = h2.create_network(N2, SUBNET)
    assert status == 409
    assert keys.overlay_def(SPACE, SUBNET) in answer["Err"] and "'vni' must be an integer" in answer["Err"] and "unreadable" in answer["Err"]
    assert "Traceback" not in answer["Err"]
    assert h2.client.network.ledger.network(N2) is None and naming.overlay_netns(N2) not in h2.netlink.world
    assert store.get(keys.overlay_member(SPACE, SUBNET, "h2")) is None
    assert h2.create_network(N3, OTHER)[0] == 200  # an unrelated overlay is fine


def test_an_unreadable_definition_nobody_holds_is_replaced_by_the_next_join(store, hosts):
    put(store, keys.overlay_def(SPACE, SUBNET), "[]")
    h1 = hosts.add("h1", "198.18.0.11")
    assert h1.create_network(N1, SUBNET)[0] == 200
    assert json.loads(store.get(keys.overlay_def(SPACE, SUBNET)).value)["vni"] == 4096


def test_a_forged_member_for_this_host_never_moves_peers_into_another_overlays_device(store, hosts):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    for host, nid, other in ((h1, N1, N3), (h2, N2, N4)):
        assert host.create_network(nid, SUBNET)[0] == 200 and host.create_network(other, OTHER)[0] == 200
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")
    # Someone writes h1's member of overlay OTHER so that it names h1's device of SUBNET.
    forged = {"host": "h1", "network": N1, "vtep": "198.18.0.11", "netns": naming.overlay_netns(N1),
              "vxlan": naming.vxlan(N1)}
    put(store, keys.overlay_member(SPACE, OTHER, "h1"), forged)
    h2.create_endpoint(N4, "4b" * 32, "10.51.0.3/24")
    h1.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3)}  # SUBNET's device: SUBNET's peers only
    assert h1.neighbours(N3) == {("10.51.0.3", "02:42:0a:33:00:03")}


def test_one_peer_the_kernel_refuses_leaves_the_others_programmed(store, pair, hosts):
    h1, h2 = pair
    inside = h1.inside(N1)
    inside.refuse_entries.add("10.50.0.31")  # the kernel refuses this neighbour entry
    h2.create_endpoint(N2, "c" * 64, "10.50.0.31/24")
    h2.create_endpoint(N2, "d" * 64, "10.50.0.32/24")
    h1.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3), ("10.50.0.32", "02:42:0a:32:00:20")}
    inside.refuse_entries.clear()
    h1.sync()  # the next sync catches up
    assert ("10.50.0.31", "02:42:0a:32:00:1f") in h1.neighbours(N1)


def test_one_broken_overlay_does_not_stop_the_others_sync(store, hosts, monkeypatch):
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    for host, nid, other in ((h1, N1, N3), (h2, N2, N4)):
        assert host.create_network(nid, SUBNET)[0] == 200 and host.create_network(other, OTHER)[0] == 200
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")
    h2.create_endpoint(N4, "4b" * 32, "10.51.0.3/24")
    applier = h1.client.overlay.applier
    real = applier.apply

    def broken(netns, vxlan, bridge, want, **kwargs):
        if vxlan == naming.vxlan(N1):
            raise RuntimeError("injected: this overlay is broken")
        return real(netns, vxlan, bridge, want, **kwargs)

    monkeypatch.setattr(applier, "apply", broken)
    h1.sync()
    assert h1.neighbours(N3) == {("10.51.0.3", "02:42:0a:33:00:03")}


def test_two_hosts_giving_one_mac_get_neither_programmed_and_doctor_reports_it(store, pair, hosts):
    h1, h2 = pair
    h3 = hosts.add("h3", "198.18.0.13")
    assert h3.create_network(N3, SUBNET)[0] == 200
    h3.create_endpoint(N3, "c" * 64, "10.50.0.4/24")
    # h3 publishes, for its own claimed address, h2's container's MAC.
    put(store, keys.overlay_peer(SPACE, SUBNET, "h3", "c" * 64),
        peer("h3", "c" * 64, "10.50.0.4", MAC3, "198.18.0.13", N3))
    h1.sync()
    assert h1.neighbours(N1) == set()
    assert MAC3 not in {mac for mac, _ in h1.fdb(N1)}
    net = h1.client.network.ledger.network(N1)
    assert net.state == READY
    # doctor's check: the overlay kind's, as the app wired it (its records, the IPAM's claims).
    found = h1.client.network.kinds["overlay"].check(net, h1.client.network.ledger.endpoints(N1),
                                                     lambda eid: None)
    whats = [d.what for d in found]
    assert any(f"MAC {MAC3} is given by hosts h2, h3: neither is programmed" in w for w in whats), whats
    # And nothing else differs: the kernel has exactly what was believed.
    assert [w for w in whats if "FDB" in w or "neighbour" in w] == []


def test_a_killed_plugins_heartbeat_goes_when_the_restarted_one_has_no_overlay(store, hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    assert h1.create_network(N1, SUBNET)[0] == 200
    h1.sync()
    h1.client.overlay.watcher.beat_if_due()
    assert store.get(keys.overlay_alive("h1")) is not None
    h1.stop()  # its watcher stopped first, so that it cannot notice the delete before the kill
    h1.ok("NetworkDriver.DeleteNetwork", {"NetworkID": N1})  # killed right after: the beat stays
    assert store.get(keys.overlay_alive("h1")) is not None
    h1.restart()
    wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
    assert store.get(keys.overlay_alive("h1")) is None


def test_restore_writes_this_hosts_member_again_when_the_stores_differs(store, pair):
    h1, _ = pair
    key = keys.overlay_member(SPACE, SUBNET, "h1")
    forged = {**json.loads(store.get(key).value), "vtep": "198.18.0.99"}
    put(store, key, forged)
    h1.restart()
    wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
    assert json.loads(store.get(key).value)["vtep"] == "198.18.0.11"


def test_a_local_container_of_another_overlay_with_the_same_address_and_mac_is_no_clash(store, hosts):
    """The same subnet in two address spaces: h1's container in one overlay has the address
    (and so the MAC) of h2's container in the other; each overlay still gets its peer."""
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    assert h1.create_network(N1, SUBNET)[0] == 200 and h2.create_network(N2, SUBNET)[0] == 200
    assert h1.create_network(N3, SUBNET, space="GlobalDefault")[0] == 200
    assert h2.create_network(N4, SUBNET, space="GlobalDefault")[0] == 200
    h1.create_endpoint(N3, "3a" * 32, "10.50.0.3/24")  # GlobalDefault's 10.50.0.3 on h1
    h2.create_endpoint(N2, "b" * 64, "10.50.0.3/24")   # LocalDefault's 10.50.0.3 on h2
    h1.sync()
    assert h1.neighbours(N1) == {("10.50.0.3", MAC3)}
    assert h1.neighbours(N3) == set()
