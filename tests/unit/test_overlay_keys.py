"""The host-owned overlay key layout (pynet_core/store/keys.py), its parsing, and the move of a
host's own records out of the old layout at start."""
from __future__ import annotations

import pytest

from driver import naming
from driver.kinds.overlay.model import Member, OverlayId, Peer
from driver.kinds.overlay.registry import Registry, parse_views
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import keys, records
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import FakeOverlayHosts

SPACE, SUBNET = "LocalDefault", "10.50.0.0/24"
OID = OverlayId(SPACE, SUBNET)
N1, N2 = "1" * 64, "2" * 64


def test_a_hosts_member_and_peer_keys_sit_under_a_prefix_naming_it():
    assert keys.overlay_member(SPACE, SUBNET, "h1") == "v1/overlay/hosts/h1/members/LocalDefault/10.50.0.0_24"
    assert keys.overlay_peer(SPACE, SUBNET, "h1", "e1") == "v1/overlay/hosts/h1/peers/LocalDefault/10.50.0.0_24/e1"
    assert keys.overlay_def(SPACE, SUBNET) == "v1/overlay/nets/LocalDefault/10.50.0.0_24/def"
    for key in (keys.overlay_member(SPACE, SUBNET, "h1"), keys.overlay_peer(SPACE, SUBNET, "h1", "e1")):
        assert key.startswith(keys.overlay_host("h1")) and key.startswith(keys.overlay_all())
    # The heartbeat stays outside the watched prefix: a beat wakes no watcher.
    assert not keys.overlay_alive("h1").startswith(keys.overlay_all())


def test_parsing_gives_back_what_each_key_names():
    parse = keys.parse_overlay_key
    assert parse(keys.overlay_def(SPACE, SUBNET)) == keys.OverlayKey(keys.DEF, SPACE, SUBNET)
    assert parse(keys.overlay_member(SPACE, SUBNET, "h1")) == keys.OverlayKey(keys.MEMBER, SPACE, SUBNET, "h1")
    assert parse(keys.overlay_peer(SPACE, SUBNET, "h1", "e1")) == \
        keys.OverlayKey(keys.PEER, SPACE, SUBNET, "h1", "e1")
    assert parse(keys.legacy_overlay_member(SPACE, SUBNET, "h1")) == \
        keys.OverlayKey(keys.LEGACY_MEMBER, SPACE, SUBNET, "h1")
    assert parse(keys.legacy_overlay_peer(SPACE, SUBNET, "h1", "e1")) == \
        keys.OverlayKey(keys.LEGACY_PEER, SPACE, SUBNET, "h1", "e1")


@pytest.mark.parametrize("key", [
    "v1/overlay/vnis/4096",
    "v1/overlay/hosts/h1/members/LocalDefault",                      # a level missing
    "v1/overlay/hosts/h1/members/LocalDefault/10.50.0.0_24/extra",   # one too many
    "v1/overlay/hosts/h1/peers/LocalDefault/10.50.0.0_24",
    "v1/overlay/hosts/h1/peers/LocalDefault/10.50.0.0_24/e1/x",
    "v1/overlay/hosts//members/LocalDefault/10.50.0.0_24",           # empty host
    "v1/overlay/hosts/h1/members/LocalDefault/10.50.0.0",            # no prefix length
    "v1/overlay/hosts/h1/members/../10.50.0.0_24",
    "v1/overlay/hosts/h1/other/LocalDefault/10.50.0.0_24",
    "v1/overlay/nets/LocalDefault/10.50.0.0_24/defx",
    "v1/overlay-alive/h1",
    "v1/hosts/h1/networks/x",
])
def test_keys_that_name_no_overlay_record_parse_to_none(key):
    assert keys.parse_overlay_key(key) is None


def _member(host, vtep="198.18.0.12"):
    return Member(host, N2, vtep, f"pno-{N2[:12]}", f"pnx{N2[:12]}")


def test_a_record_under_one_hosts_prefix_naming_another_host_is_not_read():
    store = MemoryStore()
    store.create(keys.overlay_member(SPACE, SUBNET, "h2"), records.dump(_member("h2").to_dict()))
    # h3 writes under its own prefix a member record that says it is h2's.
    store.create(keys.overlay_member(SPACE, SUBNET, "h3"), records.dump(_member("h2", "198.18.0.13").to_dict()))
    peer = Peer("h2", "e1", N2, "10.50.0.3", "02:42:0a:32:00:03", "198.18.0.12")
    store.create(keys.overlay_peer(SPACE, SUBNET, "h3", "e1"), records.dump(peer.to_dict()))
    view = parse_views(store.list(keys.overlay_all()))[OID]
    assert view.members == {"h2": _member("h2")} and view.peers == ()


def test_a_restarted_host_moves_its_own_records_out_of_the_old_layout_and_no_others(tmp_path):
    store = MemoryStore()
    hosts = FakeOverlayHosts(store)
    try:
        h1 = hosts.add("h1", "198.18.0.11")
        assert h1.create_network(N1, SUBNET)[0] == 200
        h1.create_endpoint(N1, "a" * 64, "10.50.0.2/24")
        h1.stop()
        # What an older pynet left: h1's records in the old layout (and none in the new), and
        # another host's old-layout records, which are not h1's to touch.
        for key in (keys.overlay_member(SPACE, SUBNET, "h1"), keys.overlay_peer(SPACE, SUBNET, "h1", "a" * 64)):
            entry = store.get(key)
            new_key = keys.legacy_overlay_member(SPACE, SUBNET, "h1") if "/members/" in key else \
                keys.legacy_overlay_peer(SPACE, SUBNET, "h1", "a" * 64)
            store.create(new_key, entry.value)
            store.delete(key)
        theirs = keys.legacy_overlay_member(SPACE, SUBNET, "h9")
        store.create(theirs, records.dump(_member("h9").to_dict()))
        h1.restart()
        from tests.harness.wait import wait_until
        wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
        assert store.get(keys.overlay_member(SPACE, SUBNET, "h1")) is not None
        assert store.get(keys.overlay_peer(SPACE, SUBNET, "h1", "a" * 64)) is not None
        assert store.get(keys.legacy_overlay_member(SPACE, SUBNET, "h1")) is None
        assert store.get(keys.legacy_overlay_peer(SPACE, SUBNET, "h1", "a" * 64)) is None
        assert store.get(theirs) is not None
    finally:
        hosts.close()


def test_a_host_with_an_old_layout_member_still_holds_the_definition():
    store = MemoryStore()
    reg = Registry(store, "h1", RetryQueue())
    reg.join(OID, Member("h1", N1, "198.18.0.11", naming.overlay_netns(N1), naming.vxlan(N1)), vni=None, mtu=None,
             default_mtu=1450, mtu_limit=1450, port=4789)
    store.create(keys.legacy_overlay_member(SPACE, SUBNET, "h9"), records.dump(_member("h9").to_dict()))
    reg.leave(OID, N1)
    assert store.get(keys.overlay_def(SPACE, SUBNET)) is not None  # h9 may still use it


def test_a_restarted_plugin_with_no_overlay_retires_the_heartbeat_a_killed_one_left():
    store = MemoryStore()
    store.create(keys.overlay_alive("h1"), records.dump({"host": "h1", "beat": "x"}))
    store.create(keys.overlay_alive("h2"), records.dump({"host": "h2", "beat": "y"}))
    hosts = FakeOverlayHosts(store)
    try:
        h1 = hosts.add("h1", "198.18.0.11")
        from tests.harness.wait import wait_until
        wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
        assert store.get(keys.overlay_alive("h1")) is None
        assert store.get(keys.overlay_alive("h2")) is not None  # another host's
    finally:
        hosts.close()
