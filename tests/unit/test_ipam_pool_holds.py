"""Pool holds: every RequestPool makes one named hold, ReleasePool removes exactly that one,
a RequestPool whose write landed after pynet gave up is undone, and a PoolID is client input
that is checked, never trusted (issue 9, C and H)."""
import json

import pytest

from ipam_driver.pool_id import PoolId
from ipam_driver.service import IpamService
from pynet_core.errors import BackendUnavailable, BadRequest, Conflict
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.fakes.ipam_client import DockerIpam
from tests.unit.test_ipam_faults import FlakyStore

GW = {"RequestAddressType": "com.docker.network.gateway"}
EP = {"com.docker.network.endpoint.name": "web"}


def ipam(store, host="h1") -> DockerIpam:
    svc = DockerIpam(IpamService(store, host, block_size=0, retries=RetryQueue(background=False)))
    # A first fenced write makes the host's fence key, so what a test holds back later is
    # the write under test itself.
    warm, _ = svc.request_pool("LocalDefault", "10.250.0.0/30", "", {}, False)
    svc.release_pool(warm)
    return svc


def space(store: FlakyStore | MemoryStore, name="GlobalDefault") -> dict:
    inner = getattr(store, "inner", store)
    entry = inner.get(keys.ipam_space(name))
    return {} if entry is None else json.loads(entry.value)["pools"]


def test_a_release_repeated_after_its_timed_out_write_landed_removes_one_hold_only():
    # A Swarm manager that also runs tasks holds the GlobalDefault pool twice.
    store = FlakyStore()
    svc = ipam(store)
    manager, _ = svc.request_pool("GlobalDefault", "10.7.0.0/24", "", {}, False)
    node, _ = svc.request_pool("GlobalDefault", "10.7.0.0/24", "", {}, False)
    task = svc.request_address(node, "", EP)
    store.writes_lost = True  # Consul slow past the budget: the release times out...
    with pytest.raises(BackendUnavailable):
        svc.release_pool(manager)
    store.writes_lost = False
    assert store.deliver() == [True]  # ...but its write lands,
    assert svc.retries.run_once() == 0  # and the queued retry runs once the store answers.
    assert space(store)["10.7.0.0/24"]["holders"] == {"h1": 1}
    assert space(store)["10.7.0.0/24"]["holds"] == {node.hold: "h1"}
    assert task.split("/")[0] in {e.key.rsplit("/", 1)[1] for e in store.inner.list("v1/ipam/addrs/")}
    svc.release_pool(manager)  # Docker repeating it: still nothing more
    assert space(store)["10.7.0.0/24"]["holders"] == {"h1": 1}
    svc.release_pool(node)
    assert space(store) == {} and store.inner.list("v1/ipam/addrs/") == []


def test_a_request_pool_that_lands_after_pynet_answered_503_is_undone():
    store = FlakyStore()
    svc = ipam(store)
    store.writes_lost = True
    with pytest.raises(BackendUnavailable):
        svc.request_pool("LocalDefault", "10.8.0.0/24", "", {}, False)
    store.writes_lost = False
    assert len(store.held) == 1 and "10.8.0.0/24" in store.held[0][0].value
    assert store.deliver() == [True]  # the hold landed: the subnet held with no network
    assert svc.retries.run_once() == 0  # settled: the fence moved, the late hold removed
    assert space(store, "LocalDefault") == {}
    pool, _ = svc.request_pool("LocalDefault", "10.8.0.0/24", "", {}, False)  # not 409
    assert svc.request_address(pool, "", GW) == "10.8.0.1/24"


def test_a_request_pool_held_up_until_after_the_settle_can_no_longer_land():
    store = FlakyStore()
    svc = ipam(store)
    store.writes_lost = True
    with pytest.raises(BackendUnavailable):
        svc.request_pool("LocalDefault", "10.8.0.0/24", "", {}, False)
    store.writes_lost = False
    late = store.held[:]
    store.held.clear()
    assert svc.retries.run_once() == 0
    store.held = late
    assert store.deliver() == [False]  # the fence moved first: the late write fails its check
    assert space(store, "LocalDefault") == {}


def test_the_settle_of_a_late_hold_keeps_every_other_hold():
    store = FlakyStore()
    h1, h2 = ipam(store, "h1"), ipam(store, "h2")
    theirs, _ = h2.request_pool("LocalDefault", "10.9.0.0/24", "", {}, False)
    gateway = h2.request_address(theirs, "", GW)
    store.writes_lost = True
    with pytest.raises(BackendUnavailable):
        h1.request_pool("LocalDefault", "10.9.0.0/24", "", {}, False)
    store.writes_lost = False
    assert store.deliver() == [True]
    assert h1.retries.run_once() == 0
    assert space(store, "LocalDefault")["10.9.0.0/24"]["holds"] == {theirs.hold: "h2"}
    assert h2.request_address(theirs, "", EP) != gateway


def test_old_pool_ids_keep_working_and_cannot_release_a_named_hold():
    store = MemoryStore()
    store.create(keys.ipam_space("GlobalDefault"),
                 '{"pools":{"10.6.0.0/24":{"holders":{"h1":1},"subpool":null}}}')  # pre-hold-id
    svc = ipam(store)
    old = PoolId.parse("GlobalDefault/10.6.0.0/24")
    assert svc.request_address(old, "", EP) == "10.6.0.1/24"
    new, _ = svc.request_pool("GlobalDefault", "10.6.0.0/24", "", {}, False)
    svc.release_pool(old)
    svc.release_pool(old)  # repeated: there is no unnamed hold left to take
    assert space(store)["10.6.0.0/24"]["holders"] == {"h1": 1}
    assert space(store)["10.6.0.0/24"]["holds"] == {new.hold: "h1"}


@pytest.mark.parametrize("forged", ["LocalDefault/10.1.0.0/24/10.1.1.0/24",  # outside the pool
                                    "LocalDefault/10.1.0.0/24/10.1.0.128/25"])  # not its range
def test_a_forged_range_in_a_pool_id_is_refused_and_allocates_nothing(forged):
    store = MemoryStore()
    svc = ipam(store)
    svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    with pytest.raises(BadRequest, match=r"names IP range .* but pool 10\.1\.0\.0/24 is defined "
                                         r"with the whole subnet"):
        svc.call("RequestAddress", {"PoolID": forged, "Address": "", "Options": EP})
    assert store.list("v1/ipam/addrs/") == []


def test_a_pool_id_with_a_range_other_than_the_pools_cannot_release_it():
    store = MemoryStore()
    svc = ipam(store)
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "10.1.0.0/25", {}, False)
    with pytest.raises(BadRequest, match="names IP range the whole subnet"):
        svc.call("ReleasePool", {"PoolID": "LocalDefault/10.1.0.0/24"})
    assert "10.1.0.0/24" in space(store, "LocalDefault")
    assert svc.request_address(pool, "", EP) == "10.1.0.1/24"


@pytest.mark.parametrize("garbage", [
    "LocalDefault/10.1.0.0/024", "LocalDefault/10.1.0.0/255.255.255.0", "LocalDefault/10.1.0.0/24@",
    "LocalDefault/10.1.0.0/24@XYZ", "LocalDefault/10.1.0.0/24\n", "LocalDefault/10.1.0.0/24/",
    "LocalDefault/10.1.0.0/24@0123456789abcdef0", "LocalDefault/10.1.0.0/24\u00e9",
    "LocalDefault/FD00::/64", "LocalDefault/10.1.0.0/24/10.1.0.0/24/x",
])
def test_a_pool_id_with_a_garbage_suffix_is_refused_naming_it_and_the_pool_lives(garbage):
    store = MemoryStore()
    svc = ipam(store)
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    with pytest.raises(BadRequest, match="PoolID .* was not issued by pynet"):
        svc.call("ReleasePool", {"PoolID": garbage})
    assert "10.1.0.0/24" in space(store, "LocalDefault")
    assert svc.request_address(pool, "", EP) == "10.1.0.1/24"


def test_pool_ids_round_trip_with_their_hold():
    for text in ("LocalDefault/10.1.0.0/16/10.1.2.0/24@0123456789abcdef",
                 "GlobalDefault/fd00::/64@fedcba9876543210", "LocalDefault/10.1.0.0/16"):
        assert str(PoolId.parse(text)) == text


@pytest.mark.parametrize("subnet, v6", [("0.0.0.0/0", False), ("0.0.0.0/1", False),
                                        ("10.0.0.0/7", False), ("::/0", True), ("fd00::/47", True)])
def test_a_pool_larger_than_the_minimum_is_refused(subnet, v6):
    store = MemoryStore()
    svc = ipam(store)
    with pytest.raises(BadRequest, match=rf"subnet {subnet} is too large: pynet accepts IPv{6 if v6 else 4} "
                                         rf"pools of /{48 if v6 else 8} or smaller"):
        svc.request_pool("LocalDefault", subnet, "", {}, v6)
    assert space(store, "LocalDefault") == {}
    svc.request_pool("LocalDefault", "fd00::/48" if v6 else "10.0.0.0/8", "", {}, v6)  # the largest allowed


def test_a_held_pool_still_refuses_a_second_network_on_the_same_host():
    svc = ipam(MemoryStore())
    svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    with pytest.raises(Conflict, match="already used by another network on this host"):
        svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)


def test_the_settle_of_a_hold_that_never_landed_leaves_another_hosts_definition_alone():
    store = FlakyStore()
    h1, h2 = ipam(store, "h1"), ipam(store, "h2")
    store.writes_lost = True
    with pytest.raises(BackendUnavailable):
        h1.request_pool("LocalDefault", "10.9.0.0/24", "", {}, False)
    store.writes_lost = False
    store.held.clear()  # h1's write never lands; h2 defines the pool with a range meanwhile
    theirs, _ = h2.request_pool("LocalDefault", "10.9.0.0/24", "10.9.0.0/25", {}, False)
    assert h1.retries.run_once() == 0  # settled, without tripping over h2's range
    assert h1.service._pools._writes.in_doubt() == 0  # not given up half way
    assert space(store, "LocalDefault")["10.9.0.0/24"]["holds"] == {theirs.hold: "h2"}
