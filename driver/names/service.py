"""The names of pynet's DNS, put together (pynet serve --dns-addr; docs/dns.md).

Three background jobs, started by the composition root:
- **looking**: on each dockerd event that may change a name (and every `look_interval` in
  any case, and at start), this host's names and askers are read again (local.py) from
  dockerd's container list and pynet's own records, this host's store records are made
  exactly those (NamePublisher), and the table is rebuilt at once;
- **following** dockerd's events (DockerNames.follow), which wakes the looking job;
- **watching** every host's records (NameWatcher), which rebuilds the table when another
  host's names change or a host is withdrawn by liveness.
The DNS server (server.py) answers from the latest table, and asks `networks_of` which
networks a source address's container is on.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from driver.kinds.overlay.claims import LocalRecords
from pynet_core.errors import BackendUnavailable

from .local import Address, Snapshot, snapshot
from .records import NameEntry
from .store_names import NamePublisher, NameWatcher
from .table import NameTable

log = logging.getLogger(__name__)

LOOK_INTERVAL = 30.0
GWBRIDGE = "docker_gwbridge"  # the Linux bridge of Docker's docker_gwbridge network, unless renamed


class ContainerSource(Protocol):
    def read(self) -> tuple[list[dict[str, Any]], dict[str, list[str]]] | None: ...

    def follow(self, stop: threading.Event, changed: Callable[[], None]) -> None: ...


class Names:
    def __init__(self, store, host: str, records: LocalRecords, source: ContainerSource,
                 peer_timeout: float, on_table: Callable[[NameTable], None],
                 look_interval: float = LOOK_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 on_interfaces: Callable[[frozenset[str]], object] | None = None) -> None:
        self.host = host
        self.records = records
        self.source = source
        self.look_interval = look_interval
        self.publisher = NamePublisher(store, host)
        self.snapshot = Snapshot()
        self.watcher = NameWatcher(store, host, peer_timeout, self._local, on_table, clock)
        # Told the interfaces containers ask from (pynet bridges, docker_gwbridge's bridge)
        # whenever they change: the DNS firewall (driver/firewall/dns_guard.py).
        self.on_interfaces = on_interfaces
        self._interfaces: frozenset[str] | None = None
        self._wake = threading.Event()
        self._published = True
        self.looks = 0  # completed looks (tests wait on it)

    def _local(self) -> list[NameEntry]:
        return list(self.snapshot.entries.values())

    def networks_of(self, address: Address) -> frozenset[str]:
        """The network identities of the local container holding `address` (the asker)."""
        return self.snapshot.askers.get(address, frozenset())

    def changed(self) -> None:
        self._wake.set()

    def look(self) -> bool:
        """Read this host's names again, answer them at once and store them. False when
        dockerd could not be asked (the names last read stand)."""
        networks = self.records.networks()
        read = self.source.read()
        # The firewall first, dockerd answering or not: pynet's bridges are its own records.
        if self.on_interfaces is not None:
            interfaces = frozenset({getattr(self.source, "gwbridge", GWBRIDGE)} |
                                   {n.bridge for n in networks if n.kind == "bridge" and n.bridge})
            if interfaces != self._interfaces and self.on_interfaces(interfaces) is not False:
                self._interfaces = interfaces
        if read is None:
            return False
        containers, gateways = read
        snap = snapshot(self.host, containers, gateways, networks, self.records.endpoints())
        changed = snap != self.snapshot
        self.snapshot = snap
        if changed:
            self.watcher.rebuild()
        # Published at every look, not only on a change: the publisher diffs this host's
        # records against the look, so one deleted or changed by hand comes back.
        was, self._published = self._published, False
        try:
            self.publisher.publish(snap.entries)
            self._published = True
        except BackendUnavailable as exc:
            if was:
                log.warning("names: this host's names are not stored (%s); retried",
                            exc.message)
        self.looks += 1
        return True

    def run_looks(self, stop: threading.Event) -> None:
        store_down = False
        while not stop.is_set():
            self._wake.clear()
            try:
                self.look()
                store_down = False
            except BackendUnavailable as exc:  # this host's own records are in the store
                if not store_down:
                    log.warning("names: this host's records cannot be read (%s); the names "
                                "last read are answered meanwhile", exc.message)
                store_down, self._published = True, False
            except Exception:  # noqa: BLE001 - a bug must not end the job for good
                log.exception("names: reading this host's names failed; trying again")
            self._wake.wait(self.look_interval if self._published else 1.0)
            # Events come in bursts (connect, then start): one look for a burst.
            if not stop.is_set():
                stop.wait(0.005)

    def start(self) -> list[threading.Event]:
        """Start the three jobs; their stop events."""
        looks, follows = threading.Event(), threading.Event()
        threading.Thread(target=self.run_looks, args=(looks,), name="pynet-names-look",
                         daemon=True).start()
        threading.Thread(target=self.source.follow, args=(follows, self.changed),
                         name="pynet-names-events", daemon=True).start()
        watching = self.watcher.start()
        wake = self._wake

        def stop_looks() -> None:
            looks.set()
            wake.set()  # the looking job may be waiting for an event
        return [_Stop(stop_looks), follows, watching]


class _Stop:
    """A stop handle that runs a function (Background.stop calls .set())."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.set = action
