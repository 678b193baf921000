"""Whether a dockerd is this host's: the proof both reclaim checks need before they judge
anything unused (ipam_driver/leaks.py for addresses and pools, driver/leaks.py for networks
and endpoints).

A dockerd that lists one of this host's pynet networks (or pools) is this host's. Remembering
its engine ID in the store keeps that proof when the dockerd later lists none of them: after
the last pynet network went, a pool or network record a crash left behind is otherwise never
judged, and its subnet (or bridge name) stays taken for good. Another or an empty dockerd has
another engine ID and proves nothing.
"""
from __future__ import annotations

from pynet_core.store import keys, records
from pynet_core.store.api import Store


def proven(store: Store, host: str, engine: str, knows_ours: bool) -> bool:
    key = keys.docker_engine(host)
    if knows_ours:
        if engine and _recorded(store, key) != {"engine": engine}:
            entry = store.get(key)
            value = records.dump({"engine": engine})
            # Written over whatever is there, a record that is not JSON included.
            if entry is None:
                store.create(key, value)
            else:
                store.cas(key, value, entry.version)
        return True
    return bool(engine) and _recorded(store, key) == {"engine": engine}


def _recorded(store: Store, key: str) -> object:
    entry = store.get(key)
    try:
        return None if entry is None else records.checked_load(entry)
    except ValueError:
        return None  # not what pynet writes: proves nothing
