"""Whether a dockerd is this host's: the proof both reclaim checks need before they judge
anything unused (ipam_driver/leaks.py for addresses and pools, driver/stale.py for networks
and endpoints).

A dockerd that lists one of this host's pynet networks (or pools) is this host's. Remembering
its engine ID in the store keeps that proof when the dockerd later lists none of them: after
the last pynet network went, a pool or network record a crash left behind is otherwise never
judged, and its subnet (or bridge name) stays taken for good. Another or an empty dockerd has
another engine ID and proves nothing.
"""
from __future__ import annotations

from pynet.store import keys, records
from pynet.store.api import Store


def proven(store: Store, host: str, engine: str, knows_ours: bool) -> bool:
    key = keys.docker_engine(host)
    if knows_ours:
        if engine and records.read(store, key) != {"engine": engine}:
            records.update(store, key, lambda _: {"engine": engine}, "recording the dockerd's engine ID")
        return True
    return bool(engine) and records.read(store, key) == {"engine": engine}
