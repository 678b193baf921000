"""The kernel settings pynet gives its overlay devices for throughput (docs/overlay.md
"Performance"), on the real kernel: one simulated host (tests/harness/overlay_hosts.py)."""
from __future__ import annotations

from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_hosts import OverlayBed

SUBNET = "10.50.0.0/24"


def test_the_overlay_namespace_skips_br_netfilter_and_a_restart_turns_it_off_again(make_netns):
    bed = OverlayBed(make_netns, MemoryStore())
    try:
        h1 = bed.host("h1", "198.18.0.11")
        nid = h1.network(SUBNET)
        inside = h1.inside(nid)
        # A new namespace starts with bridge-nf-call-* on; the overlay's has them off (it
        # has no rules for br_netfilter to run), the host's own stay as they were.
        assert inside.namespace_bridge_netfilter() is False
        assert h1.netlink.namespace_bridge_netfilter() is True
        inside.set_namespace_bridge_netfilter(True)  # e.g. br_netfilter loaded after it was made
        h1.restart()
        assert inside.namespace_bridge_netfilter() is False
    finally:
        bed.close()
