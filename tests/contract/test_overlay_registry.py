"""The overlay registry on every store backend, Consul included: hosts agree on one
definition, VNIs are unique cluster-wide and freed by the last host, concurrent joins make
one definition, and a published peer wakes another host's watch."""
from __future__ import annotations

import threading

import pytest

from driver import naming
from driver.kinds.overlay.model import Member, OverlayId, Peer
from driver.kinds.overlay.registry import Registry
from pynet_core.errors import Conflict
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import keys

OID = OverlayId("LocalDefault", "10.50.0.0/24")


def registry(open_store, host):
    return Registry(open_store(), host, RetryQueue(background=False))


def member(host, nid="n", vtep="198.18.0.11"):
    return Member(host, nid + host, vtep, naming.overlay_netns(nid + host), naming.vxlan(nid + host))


def join(reg, oid=OID, vni=None, mtu=None):
    return reg.join(oid, member(reg.host), vni=vni, mtu=mtu, default_mtu=1450, mtu_limit=1450, port=4789)


def test_hosts_share_one_definition_and_the_last_one_frees_the_vni(open_store):
    h1, h2 = registry(open_store, "h1"), registry(open_store, "h2")
    assert join(h1).vni == 4096
    assert join(h2).vni == 4096
    assert join(h1, OverlayId("LocalDefault", "10.51.0.0/24")).vni == 4097
    with pytest.raises(Conflict, match="by h1, h2"):
        join(registry(open_store, "h3"), vni=7)
    assert sorted(h1.view(OID).members) == ["h1", "h2"]
    h1.leave(OID, "nh1")
    assert h2.store.get(keys.overlay_vni(4096)) is not None
    h2.leave(OID, "nh2")
    assert h2.store.get(keys.overlay_vni(4096)) is None
    assert h2.store.list(keys.overlay_net(OID.space, OID.subnet)) == []
    assert join(h2, OverlayId("GlobalDefault", "10.52.0.0/24")).vni == 4096


def test_concurrent_first_joins_make_one_definition_and_distinct_overlays_distinct_vnis(open_store):
    hosts = [registry(open_store, f"h{i}") for i in range(6)]
    got: dict[str, int] = {}

    def go(reg, oid):
        got[reg.host] = join(reg, oid).vni

    threads = [threading.Thread(target=go, args=(r, OID if i % 2 else OverlayId("LocalDefault", f"10.6{i}.0.0/24")))
               for i, r in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = {got[f"h{i}"] for i in (1, 3, 5)}
    others = [got[f"h{i}"] for i in (0, 2, 4)]
    assert len(same) == 1 and len(set(others) | same) == 4


def test_a_published_peer_wakes_another_hosts_watch(open_store):
    h1, h2 = registry(open_store, "h1"), registry(open_store, "h2")
    join(h1), join(h2)
    index = h2.store.watch(keys.overlay_all(), 0, 0.1)
    woke = threading.Event()

    def watch():
        h2.store.watch(keys.overlay_all(), index, 10)
        woke.set()

    threading.Thread(target=watch, daemon=True).start()
    h1.publish(OID, Peer("h1", "e1", "nh1", "10.50.0.2", "02:42:0a:32:00:02", "198.18.0.11"))
    assert woke.wait(5), "the watch did not wake on a peer write"
    assert [p.ip for p in h2.view(OID).peers] == ["10.50.0.2"]
    assert h1.withdraw(OID, "e1") and h2.view(OID).peers == ()
