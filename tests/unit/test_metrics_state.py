"""The state gauges read the store through the drivers' own record code (ipam_driver/models.py,
driver/ledger.py, the overlay's registry): a record those skip is left out of every gauge,
without a word at each scrape, and the rest are counted as the drivers read them."""
from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pynet import metrics
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import FakeOverlayHosts

N1, N2, E1, E2 = "1" * 64, "2" * 64, "a" * 64, "b" * 64


def gauges(store, host: str) -> dict:
    registry = CollectorRegistry()
    registry.register(metrics.StateCollector(store, host))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def skipped() -> float:
    return sum(child._value.get() for child in metrics.SKIPPED_RECORDS._metrics.values())


def test_records_the_drivers_skip_are_left_out_quietly():
    store = MemoryStore()
    store.create(keys.ipam_space("LocalDefault"), json.dumps(
        {"pools": {"10.9.0.0/24": {"subpool": None, "holders": {}, "holds": {"p1": "h1"}}}}))
    store.create(keys.ipam_space("Broken"), json.dumps({"pools": {"10.8.0.0/24": "not a pool"}}))
    store.create(keys.ipam_addr("LocalDefault", "10.9.0.0/24", "10.9.0.2"),
                 json.dumps({"kind": "endpoint", "name": "", "host": "h1"}))
    store.create(keys.ipam_addr("LocalDefault", "10.9.0.0/24", "10.7.0.2"),  # not in its pool
                 json.dumps({"kind": "endpoint", "name": "", "host": "h1"}))
    store.create(keys.ipam_addr("LocalDefault", "10.9.0.0/24", "10.9.0.3"), json.dumps({"kind": "what"}))
    store.create(keys.network("h1", N1), json.dumps({"id": N1, "options": {"type": "macvlan"}}))
    store.create(keys.network("h1", N2), json.dumps({"id": N2}))  # no options: not a record
    before = skipped()
    found = gauges(store, "h1")
    assert skipped() == before
    assert found[("pynet_pools", (("space", "LocalDefault"),))] == 1
    # A hold named since hold ids exist counts, as PoolEntry.held_by says.
    assert found[("pynet_pools_held", (("space", "LocalDefault"),))] == 1
    assert ("pynet_pools", (("space", "Broken"),)) not in found
    assert [k for k in found if k[0] == "pynet_addresses_allocated"] == [
        ("pynet_addresses_allocated", (("kind", "endpoint"), ("pool", "10.9.0.0/24"), ("space", "LocalDefault")))]
    assert [k for k in found if k[0] == "pynet_networks"] == [("pynet_networks", (("type", "macvlan"),))]
    assert [k for k in found if k[0] == "pynet_endpoints"] == [("pynet_endpoints", (("network", N1[:12]),))]


def test_overlay_peers_are_the_other_hosts_endpoints_per_overlay():
    store = MemoryStore()
    hosts = FakeOverlayHosts(store)
    try:
        h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
        assert h1.create_network(N1, "10.50.0.0/24")[0] == 200
        assert h2.create_network(N2, "10.50.0.0/24")[0] == 200
        h1.create_endpoint(N1, E1, "10.50.0.2/24")
        h2.create_endpoint(N2, E2, "10.50.0.3/24")
        found = gauges(store, "h1")
    finally:
        hosts.close()
    assert found[("pynet_overlay_peers", (("overlay", "LocalDefault/10.50.0.0/24"),))] == 1
    assert found[("pynet_endpoints", (("network", N1[:12]),))] == 1
