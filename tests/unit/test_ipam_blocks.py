"""Per-host address blocks (ipam_driver/blocks.py, hostblocks.py) over the in-memory store."""
import ipaddress
import json
import threading

import pytest
from hypothesis import given, settings, strategies as st

from pynet_core.errors import BadRequest
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from ipam_driver import blocks
from ipam_driver.service import IpamService
from tests.fakes.ipam_client import DockerIpam

net = ipaddress.ip_network
GW = {"RequestAddressType": "com.docker.network.gateway"}


def ep(name):
    return {"com.docker.network.endpoint.name": name}


def ipam(store, host, **kwargs):
    return DockerIpam(IpamService(store, host, **kwargs))


def owners(store, pool="10.1.0.0/24"):
    return {e.key.rsplit("/", 1)[1]: e for e in store.list(keys.ipam_blocks("LocalDefault", pool))}


# --- pure choice ----------------------------------------------------------------------------
@pytest.mark.parametrize("within, size, prefix", [
    ("10.0.0.0/16", 64, 26), ("10.0.0.0/24", 64, 26), ("10.0.0.0/25", 64, 27),
    ("10.0.0.0/28", 64, 30), ("10.0.0.0/29", 64, None), ("10.0.0.0/24", 0, None),
    ("fd00::/64", 64, 122), ("10.0.0.0/16", 4, 30),
])
def test_block_prefix(within, size, prefix):
    assert blocks.block_prefix(net(within), size) == prefix


def test_choice_prefers_own_blocks_then_claims_then_borrows():
    r = net("10.0.0.0/24")
    ip = lambda s: int(ipaddress.ip_address(s))  # noqa: E731
    mine = [net("10.0.0.64/26")]
    taken = mine + [net("10.0.0.0/26")]
    assert blocks.choose(r, r, 26, mine, taken, {ip("10.0.0.64")}) == blocks.Choice(
        "own", ip("10.0.0.65"), net("10.0.0.64/26"))
    full = {ip(f"10.0.0.{i}") for i in range(64, 128)}
    assert blocks.choose(r, r, 26, mine, taken, full) == blocks.Choice(
        "claim", ip("10.0.0.128"), net("10.0.0.128/26"))
    everything = taken + [net("10.0.0.128/26"), net("10.0.0.192/26")]
    assert blocks.choose(r, r, 26, mine, everything, full) == blocks.Choice("borrow", ip("10.0.0.1"))
    all_used = {ip(f"10.0.0.{i}") for i in range(1, 255)}
    assert blocks.choose(r, r, 26, mine, everything, all_used) is None


def test_an_unclaimed_but_full_block_is_skipped():
    r = net("10.0.0.0/24")
    used = {int(ipaddress.ip_address(f"10.0.0.{i}")) for i in range(1, 64)}  # --ip filled .0/26
    assert blocks.choose(r, r, 26, [], [], used).block == net("10.0.0.64/26")


@settings(max_examples=200, deadline=None)
@given(used=st.sets(st.integers(0, 255), max_size=250), claimed=st.sets(st.integers(0, 3)),
       own=st.sets(st.integers(0, 3)))
def test_choice_is_free_in_range_and_never_reserved(used, claimed, own):
    r = net("10.0.0.0/24")
    base = int(r.network_address)
    taken = [net(f"10.0.0.{64 * b}/26") for b in claimed | own]
    mine = [net(f"10.0.0.{64 * b}/26") for b in own]
    choice = blocks.choose(r, r, 26, mine, taken, {base + u for u in used})
    free = set(range(1, 255)) - used
    if choice is None:
        assert not free
    else:
        assert choice.address - base in free
        if choice.kind == "own":
            assert choice.block in mine


def test_idle_blocks_keep_one():
    b = [net("10.0.0.0/26"), net("10.0.0.64/26"), net("10.0.0.128/26")]
    used = {int(ipaddress.ip_address("10.0.0.70"))}
    assert blocks.idle_blocks(b, used) == [net("10.0.0.0/26"), net("10.0.0.128/26")]  # .64 stays
    assert blocks.idle_blocks(b, set()) == [net("10.0.0.64/26"), net("10.0.0.128/26")]
    assert blocks.idle_blocks(b[:1], set()) == []


# --- the service ------------------------------------------------------------------------------
def test_each_host_gets_a_block_of_its_own():
    store = MemoryStore()
    hosts = [ipam(store, f"h{i}") for i in (1, 2, 3)]
    for h in hosts:
        pool, _ = h.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    assert [h.request_address(pool, "", ep(h.host)) for h in hosts] == [
        "10.1.0.1/24", "10.1.0.64/24", "10.1.0.128/24"]
    assert {k: json.loads(e.value)["host"] for k, e in owners(store).items()} == {
        "10.1.0.0_26": "h1", "10.1.0.64_26": "h2", "10.1.0.128_26": "h3"}


def test_a_full_host_claims_another_block_then_borrows():
    store = MemoryStore()
    a, b = ipam(store, "h1"), ipam(store, "h2")
    for h in (a, b):
        pool, _ = h.request_pool("LocalDefault", "10.1.0.0/28", "", {}, False)  # /30 blocks
    got = [a.request_address(pool, "", ep(f"a{i}")) for i in range(3)]
    assert got == ["10.1.0.1/28", "10.1.0.2/28", "10.1.0.3/28"]  # .0 is reserved
    assert b.request_address(pool, "", ep("b0")) == "10.1.0.4/28"  # next block, for h2
    got += [a.request_address(pool, "", ep(f"a{i}")) for i in range(3, 11)]
    # h1 claimed .8/30 and .12/30, then borrowed in h2's .4/30
    assert got[3:] == [f"10.1.0.{i}/28" for i in (8, 9, 10, 11, 12, 13, 14, 5)]
    assert set(owners(store, "10.1.0.0/28")) == {"10.1.0.0_30", "10.1.0.4_30", "10.1.0.8_30",
                                                 "10.1.0.12_30"}


def _h1_took_seven_beside_h2():
    """h1 and h2 share 10.1.0.0/24 in blocks of 4; h1 took seven addresses (three blocks'
    worth: .0/30 has 3 usable). (store, h1's and h2's IPAMs, each one's pool id, the seven
    addresses)."""
    store = MemoryStore()
    a, b = ipam(store, "h1", block_size=4), ipam(store, "h2", block_size=4)
    pool, _ = a.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    theirs, _ = b.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    return store, a, b, pool, theirs, [a.request_address(pool, "", ep(f"a{i}")).split("/")[0]
                                       for i in range(7)]


def test_idle_blocks_go_back_on_release_and_all_of_them_when_the_host_leaves():
    store, a, b, pool, theirs, addrs = _h1_took_seven_beside_h2()
    assert len(owners(store)) == 2  # .0/30 (3 usable) and .4/30
    for ip in addrs[3:]:
        a.release_address(pool, ip)
    assert set(owners(store)) == {"10.1.0.0_30"}  # .4/30 emptied and went back; one stays
    b.request_address(theirs, "", ep("b"))
    a.release_pool(pool)
    assert [json.loads(e.value)["host"] for e in owners(store).values()] == ["h2"]
    b.release_pool(theirs)
    assert store.list("v1/ipam/blocks/") == [] and store.list("v1/ipam/addrs/") == []


def test_block_size_is_fixed_per_pool_and_can_be_set_per_network():
    store = MemoryStore()
    plain, blocky = ipam(store, "h1", block_size=0), ipam(store, "h2")
    pool, _ = plain.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    blocky.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    assert blocky.request_address(pool, "", ep("x")) == "10.1.0.1/24"  # the pool has no blocks
    other, _ = plain.request_pool("LocalDefault", "10.2.0.0/24", "", {"pynet.block-size": "16"}, False)
    blocky.request_pool("LocalDefault", "10.2.0.0/24", "", {}, False)
    assert plain.request_address(other, "", ep("y")) == "10.2.0.1/24"
    assert blocky.request_address(other, "", ep("z")) == "10.2.0.16/24"
    for bad in ("12", "2", "x", "-4"):
        with pytest.raises(BadRequest, match="pynet.block-size"):
            plain.request_pool("LocalDefault", "10.3.0.0/24", "", {"pynet.block-size": bad}, False)


def test_gateway_and_explicit_addresses_ignore_blocks():
    store = MemoryStore()
    a, b = ipam(store, "h1"), ipam(store, "h2")
    for h in (a, b):
        pool, _ = h.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    assert b.request_address(pool, "", GW) == "10.1.0.1/24"
    assert b.request_address(pool, "10.1.0.5", ep("pinned")) == "10.1.0.5/24"
    assert a.request_address(pool, "", ep("first")) == "10.1.0.2/24"  # h1's block .0/26
    assert b.request_address(pool, "", ep("second")) == "10.1.0.64/24"


def test_many_threads_on_many_hosts_never_duplicate_and_release_everything():
    store = MemoryStore()
    hosts = [ipam(store, f"h{i}", block_size=16) for i in range(3)]
    for h in hosts:
        pool, _ = h.request_pool("LocalDefault", "10.7.0.0/24", "", {}, False)
    got, lock = [], threading.Lock()

    def worker(h, n):
        for i in range(42):
            address = h.request_address(pool, "", ep(f"{h.host}-{n}-{i}"))
            with lock:
                got.append((h, address))

    threads = [threading.Thread(target=worker, args=(h, n)) for h in hosts for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a for _, a in got}) == len(got) == 252
    for h, address in got:
        h.release_address(pool, address.split("/")[0])
    assert store.list("v1/ipam/addrs/") == []
    assert len(store.list("v1/ipam/blocks/")) <= 3  # each host keeps at most one


def test_hosts_choosing_a_gateway_at_once_share_one():
    """h2 lists the pool before h1's gateway claim lands (a stale read): it still ends up
    holding h1's gateway, never a second one."""
    store = MemoryStore()
    a, b = ipam(store, "h1"), ipam(store, "h2")
    for h in (a, b):
        pool, _ = h.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    real_list, calls = store.list, []

    def stale_list(prefix):
        calls.append(prefix)
        if len(calls) == 1:
            assert a.request_address(pool, "", GW) == "10.1.0.1/24"  # lands meanwhile
            return []
        return real_list(prefix)

    store.list = stale_list
    assert b.request_address(pool, "", GW) == "10.1.0.1/24"
    store.list = real_list
    gateways = [json.loads(e.value) for e in store.list("v1/ipam/addrs/")]
    assert [(g["kind"], sorted(g["holders"])) for g in gateways] == [("gateway", ["h1", "h2"])]


class CountingStore(MemoryStore):
    """Counts listings of a pool's address claims (what a release used to scan)."""

    def __init__(self) -> None:
        super().__init__()
        self.address_listings = 0

    def list(self, prefix):
        if prefix.startswith("v1/ipam/addrs/"):
            self.address_listings += 1
        return super().list(prefix)


def test_releases_after_a_restart_read_the_pool_once_and_free_exactly_their_address():
    store = CountingStore()
    a = ipam(store, "h1", block_size=4)
    pool, _ = a.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    addrs = [a.request_address(pool, "", ep(f"a{i}")).split("/")[0] for i in range(11)]
    assert len(owners(store)) == 3  # .0/30 (3 usable), .4/30, .8/30
    a = ipam(store, "h1", block_size=4)  # a restarted plugin: no view of the pool
    store.address_listings = 0
    for ip in addrs[:2] + addrs[3:6]:  # no block empties: .3 and .7 are still held
        a.release_address(pool, ip)
    assert store.address_listings == 1  # one read for all five (it was one per release)
    claimed = {e.key.rsplit("/", 1)[1] for e in store.list("v1/ipam/addrs/")}
    assert claimed == {addrs[2], *addrs[6:]}
    a.release_address(pool, addrs[2])  # .0/30 empties: given back, proven by the store
    assert set(owners(store)) == {"10.1.0.4_30", "10.1.0.8_30"}
    a.release_address(pool, addrs[6])  # .4/30 empties too
    assert set(owners(store)) == {"10.1.0.8_30"}
    claimed = {e.key.rsplit("/", 1)[1] for e in store.list("v1/ipam/addrs/")}
    assert claimed == set(addrs[7:])
    assert a.request_address(pool, "", ep("again")) == "10.1.0.1/24"  # .8/30 is full: .0/30 anew


def test_a_block_the_view_thinks_empty_stays_while_the_store_shows_a_claim_in_it():
    store, a, b, pool, theirs, addrs = _h1_took_seven_beside_h2()
    assert addrs[3:] == ["10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.7"]
    a = ipam(store, "h1", block_size=4)  # restarted: the first release reads the view
    for ip in addrs[3:6]:
        a.release_address(pool, ip)
    b.request_address(theirs, "10.1.0.5", ep("b"))  # after a's view was read
    a.release_address(pool, addrs[6])  # a's view: .4/30 empty; the store: .5 is claimed
    assert "10.1.0.4_30" in owners(store)
    b.release_address(theirs, "10.1.0.5")
    assert json.loads(owners(store)["10.1.0.4_30"].value)["host"] == "h1"
