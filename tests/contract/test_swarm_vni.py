"""Swarm VNIs on every store backend, real Consul included (issue 17, item 5):

- AllocateNetwork of one network, in parallel, with an explicit VNI or without: every call
  answers the same VNI and exactly one claim is left (it was refused by its own claim,
  409 naming itself);
- FreeNetwork while a node still has the overlay: the next AllocateNetwork never takes the
  VNI that node's definition uses (it took it, and that node's CreateNetwork failed).
"""
from __future__ import annotations

import threading

import pytest

from driver import naming
from driver.kinds.overlay.model import FIRST_SWARM_VNI, Member, OverlayId
from driver.kinds.overlay.registry import Registry
from pynet_core.errors import Conflict
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import keys, records

NET, OTHER = "k2mq0d8f5tq1vz8b3yl2c0h7x", "p9w1x0c3v5b7n2m4q6e8r0t1y"
GLOBAL = OverlayId("GlobalDefault", "10.60.0.0/24")


def registry(open_store, host):
    return Registry(open_store(), host, RetryQueue(background=False))


def claims(store) -> dict[int, dict]:
    prefix = keys.overlay_vnis()
    return {int(e.key[len(prefix):]): records.load(e) for e in store.list(prefix)}


def in_parallel(calls) -> list:
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("vni", [None, 2_000_000])
def test_parallel_allocations_of_one_network_answer_one_vni(open_store, vni):
    managers = [registry(open_store, f"m{i}") for i in range(6)]
    for round_ in range(3):
        net = f"{NET[:-1]}{round_}"
        got = in_parallel([lambda m=m: m.allocate_swarm_vni(net, GLOBAL, vni) for m in managers])
        assert all(isinstance(v, int) for v in got), got
        assert len(set(got)) == 1, got
        mine = {v: c for v, c in claims(managers[0].store).items() if c["network"] == net}
        assert list(mine) == [got[0]]
        if vni is not None:
            assert got[0] == vni
            managers[0].free_swarm_vni(net)


def test_parallel_allocations_of_different_networks_get_different_vnis(open_store):
    managers = [registry(open_store, f"m{i}") for i in range(6)]
    got = in_parallel([lambda i=i, m=m: m.allocate_swarm_vni(f"{NET[:-2]}{i:02d}", GLOBAL, None)
                       for i, m in enumerate(managers)])
    assert sorted(got) == list(range(FIRST_SWARM_VNI, FIRST_SWARM_VNI + 6))
    assert len(claims(managers[0].store)) == 6


def test_a_vni_a_node_still_uses_is_never_handed_out_after_free_network(open_store):
    manager, node = registry(open_store, "m1"), registry(open_store, "h2")
    vni = manager.allocate_swarm_vni(NET, GLOBAL, None)
    # The node creates the overlay with that VNI (nodes keep Swarm networks in the local space).
    local = OverlayId("LocalDefault", GLOBAL.subnet)
    node.join(local, Member("h2", NET, "198.18.0.12", naming.overlay_netns(NET), naming.vxlan(NET)), vni=vni, mtu=None,
              default_mtu=1450, mtu_limit=1450, port=4789)
    assert manager.free_swarm_vni(NET) == vni  # FreeNetwork before the node deleted it
    # The next network is not given the VNI the node's definition still uses ...
    later = manager.allocate_swarm_vni(OTHER, OverlayId("GlobalDefault", "10.61.0.0/24"), None)
    assert later != vni
    # ... nor may it ask for it.
    with pytest.raises(Conflict, match=f"VNI {vni} is still used by overlay 10.60.0.0/24 \\(LocalDefault\\)"):
        manager.allocate_swarm_vni("z" * 25, OverlayId("GlobalDefault", "10.62.0.0/24"), vni)
    # The network's own nodes keep theirs: its allocation again (a new leader) gets it back.
    assert manager.allocate_swarm_vni(NET, GLOBAL, vni) == vni
    node.leave(local, NET)
    assert manager.free_swarm_vni(NET) == vni
    assert manager.allocate_swarm_vni("z" * 25, OverlayId("GlobalDefault", "10.62.0.0/24"), vni) == vni


def test_an_explicit_vni_held_by_another_network_is_still_refused(open_store):
    a, b = registry(open_store, "m1"), registry(open_store, "m2")
    assert a.allocate_swarm_vni(NET, GLOBAL, 3_000_000) == 3_000_000
    with pytest.raises(Conflict, match="VNI 3000000 is already used by overlay 10.60.0.0/24"):
        b.allocate_swarm_vni(OTHER, OverlayId("GlobalDefault", "10.61.0.0/24"), 3_000_000)
    with pytest.raises(Conflict, match="already has VNI 3000000"):
        b.allocate_swarm_vni(NET, GLOBAL, 3_000_001)
