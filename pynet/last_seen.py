"""This host's last-seen report in a shared store (v1/hosts/<host>/seen).

With Consul, a host that died for good keeps its address claims; `pynet ipam check` names
the claims of hosts whose last-seen report is older than a limit. The report carries this
host's wall clock: the reader compares it with its own, so it is for a person (clocks of
hosts may differ by seconds), never a reason to release anything. It is not the overlay's
heartbeat (driver/kinds/overlay/liveness.py), whose *version* moving is what keeps a host's
peers programmed, judged on each reader's own clock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pynet_core.store import keys, records
from pynet_core.store.api import Store

# Written this often by `pynet serve` with --store consul.
INTERVAL = 10.0
# ... and after a failed write this soon (Consul may have no leader yet at start): a host
# that has not beaten reads as "never seen" to `pynet ipam check`.
RETRY = 1.0


def report(store: Store, host: str, clock=time.time) -> None:
    records.update(store, keys.host_seen(host), lambda _: {"host": host, "time": round(clock(), 3)},
                   "writing this host's last-seen report")


@dataclass(frozen=True, slots=True)
class Seen:
    host: str
    time: float  # the host's own clock at its last report


def read_all(store: Store) -> dict[str, Seen]:
    """Every host's last report."""
    found: dict[str, Seen] = {}
    for entry in store.list(keys.hosts_all()):
        host = keys.host_of(entry.key)
        if host is None or entry.key != keys.host_seen(host):
            continue
        try:
            data = records.load(entry)
            found[host] = Seen(host, float(data["time"]))
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: the host counts as never seen
    return found
