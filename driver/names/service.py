"""The names of pynet's DNS, put together (pynet serve --dns-addr; docs/dns.md).

Three background jobs, started by the composition root:
- **looking**: at start and every `look_interval` (the safety net), this host's names and
  askers are read again in full (local.py) from dockerd's container list and pynet's own
  records; on a dockerd event naming a container, only that container is asked about (one
  inspect: a burst of starts costs one inspect each, not a list and inspect of every
  container per event) and the last full read is updated with it. Either way this host's
  store records are made exactly the names (NamePublisher) and the table is rebuilt at once;
- **following** dockerd's events (DockerNames.follow), which wakes the looking job with the
  container each names (or asks for a full look: a network made or gone, the stream lost);
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
from driver.models import READY
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

    def follow(self, stop: threading.Event, changed: Callable[[str | None, bool], None]) -> None: ...

    # Optional (docker_names.DockerNames has it): what dockerd says now of some containers
    # only, None for one gone or stopped; without it every event makes a full look.
    # def read_containers(self, cids) -> tuple[dict[str, dict | None], dict[str, list[str]]] | None


MAX_PENDING = 256  # containers named by events before a full look is cheaper


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
        self.looks = 0  # completed looks, full or of some containers (tests wait on it)
        self.full_looks = 0
        # The last full read, kept up to date by the looks at single containers: container
        # id -> its list entry, and docker_gwbridge's addresses by container id.
        self._containers: dict[str, dict[str, Any]] | None = None
        self._gateways: dict[str, list[str]] = {}
        self._pending: set[str] = set()  # containers events named since the last look
        self._full = True  # a full look is due (at start, after a lost stream, ...)
        self._pending_lock = threading.Lock()
        self._timing: tuple[int, float, float, float] | None = None  # of a look_at (debug log)
        self._last_networks: list = []  # pynet's networks, as the last full look read them
        # (network id, endpoint id) -> pynet's endpoint record, of the running containers
        self._endpoints: dict | None = None

    def _local(self) -> list[NameEntry]:
        return list(self.snapshot.entries.values())

    def networks_of(self, address: Address) -> frozenset[str]:
        """The network identities of the local container holding `address` (the asker)."""
        return self.snapshot.askers.get(address, frozenset())

    def changed(self, container: str | None = None, network_event: bool = False) -> None:
        """An event: about `container` (its id), or None: read everything again. A network's
        connect or disconnect (`network_event`) counts only for a container already running
        here: one being started is connected before it runs, and its `start` follows
        (inspecting it at the connect would wait for dockerd to finish starting it)."""
        with self._pending_lock:
            if container is None or len(self._pending) >= MAX_PENDING:
                self._full = True
            elif not network_event or (self._containers is not None and container in self._containers):
                self._pending.add(container)
            else:
                return
        self._wake.set()

    def _take(self) -> tuple[bool, set[str]]:
        with self._pending_lock:
            full, pending = self._full, self._pending
            self._full, self._pending = False, set()
        return full, pending

    def _full_next(self) -> None:
        """The next look reads everything (whatever the events named since the last one
        is in it), without waking the job: it comes at the next event or wait's end."""
        with self._pending_lock:
            self._full = True

    def look(self) -> bool:
        """Read this host's names again in full, answer them at once and store them. False
        when dockerd could not be asked (the names last read stand)."""
        networks = self._networks()
        read = self.source.read()
        if read is None:
            return False
        self._last_networks = networks
        self._endpoints = None  # read in full
        containers, gateways = read
        self._containers = {c["Id"]: c for c in containers
                            if isinstance(c, dict) and isinstance(c.get("Id"), str)}
        self._gateways = gateways
        self.full_looks += 1
        return self._settle(networks)

    def look_at(self, cids: set[str]) -> bool:
        """Read again only what dockerd says of these containers (an event named them) and
        update the last full read with it. False when it cannot be done this way (no full
        read yet, a source without read_containers, dockerd not answering): a full look is
        then due."""
        read_containers = getattr(self.source, "read_containers", None)
        if self._containers is None or read_containers is None:
            return False
        started = time.perf_counter()
        # pynet's networks as the last full look read them: a network made or gone is a
        # dockerd event that makes a full look (its record is ready before dockerd says so).
        networks = self._last_networks
        read = read_containers(sorted(cids))
        if read is None:
            return False
        found, gateways = read
        asked = time.perf_counter()
        for cid, entry in found.items():
            if entry is None:
                self._containers.pop(cid, None)
            else:
                self._containers[cid] = entry
        if gateways is not None:
            self._gateways = gateways
        else:  # not read (none of them runs): the others' docker_gwbridge addresses stand
            self._gateways = {c: a for c, a in self._gateways.items() if c in self._containers}
        # Only the endpoint records of the containers looked at are read (one get each).
        endpoint = getattr(self.records, "endpoint", None)
        if endpoint is None or self._endpoints is None:
            self._endpoints = None
        else:
            known = {n.id for n in networks}
            for cid, entry in found.items():
                for nid, eid in _endpoint_ids(entry):
                    if nid in known and (nid, eid) not in self._endpoints:
                        record = endpoint(nid, eid)
                        if record is not None and record.state == READY:  # else asked again
                            self._endpoints[(nid, eid)] = record
        self._timing = (len(cids), started, asked, time.perf_counter())
        return self._settle(networks, partial=True)

    def _networks(self):
        networks = self.records.networks()
        # The firewall first, dockerd answering or not: pynet's bridges are its own records.
        if self.on_interfaces is not None:
            interfaces = frozenset({getattr(self.source, "gwbridge", GWBRIDGE)} |
                                   {n.bridge for n in networks if n.kind == "bridge" and n.bridge})
            if interfaces != self._interfaces and self.on_interfaces(interfaces) is not False:
                self._interfaces = interfaces
        return networks

    def _settle(self, networks, partial: bool = False) -> bool:
        """The names of the last read (kept up to date), answered at once and stored."""
        assert self._containers is not None
        read_at = time.perf_counter()
        if self._endpoints is None:
            self._endpoints = {(e.network_id, e.id): e for e in self.records.endpoints()}
        snap = snapshot(self.host, self._containers.values(), self._gateways, networks,
                        self._endpoints.values())
        # The endpoint records still in use are kept for the next look at one container.
        used = {ids for entry in self._containers.values() for ids in _endpoint_ids(entry)}
        self._endpoints = {k: v for k, v in self._endpoints.items() if k in used}
        changed = snap != self.snapshot
        before, self.snapshot = self.snapshot, snap
        if changed:
            self.watcher.rebuild()
        # A full look publishes in full, not only on a change: the publisher diffs this
        # host's records against the look, so one deleted or changed by hand comes back. A
        # look at one container writes only what changed (after a publish that went well).
        was, self._published = self._published, False
        publishing = time.perf_counter()
        try:
            if partial and was:
                self.publisher.publish_changes(before.entries, snap.entries)
            else:
                self.publisher.publish(snap.entries)
            self._published = True
        except BackendUnavailable as exc:
            if was:
                log.warning("names: this host's names are not stored (%s); retried",
                            exc.message)
        self.looks += 1
        if log.isEnabledFor(logging.DEBUG) and self._timing is not None:
            count, started, asked, inspected = self._timing
            done = time.perf_counter()
            log.debug("names: look at %d container(s) in %.1f ms (dockerd %.1f, endpoint "
                      "records %.1f, table %.1f, publish %.1f)", count,
                      (done - started) * 1e3, (asked - started) * 1e3, (inspected - asked) * 1e3,
                      (publishing - read_at) * 1e3, (done - publishing) * 1e3)
        self._timing = None
        return True

    def run_looks(self, stop: threading.Event) -> None:
        store_down = False
        next_full = time.monotonic()  # the first look is a full one
        while not stop.is_set():
            self._wake.clear()
            full, pending = self._take()
            try:
                if full or time.monotonic() >= next_full or (pending and not self.look_at(pending)):
                    if self.look():
                        next_full = time.monotonic() + self.look_interval
                    else:
                        self._full_next()  # dockerd did not answer
                store_down = False
            except BackendUnavailable as exc:  # this host's own records are in the store
                if not store_down:
                    log.warning("names: this host's records cannot be read (%s); the names "
                                "last read are answered meanwhile", exc.message)
                store_down, self._published = True, False
                self._full_next()
            except Exception:  # noqa: BLE001 - a bug must not end the job for good
                log.exception("names: reading this host's names failed; trying again")
                self._full_next()
            until_full = max(0.0, next_full - time.monotonic())
            self._wake.wait(until_full if self._published else min(until_full, 1.0))
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


def _endpoint_ids(entry: Any) -> list[tuple[str, str]]:
    """(network id, endpoint id) of every network of a container-list entry."""
    settings = entry.get("NetworkSettings") if isinstance(entry, dict) else None
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    if not isinstance(networks, dict):
        return []
    return [(ep["NetworkID"], ep["EndpointID"]) for ep in networks.values()
            if isinstance(ep, dict) and isinstance(ep.get("NetworkID"), str)
            and isinstance(ep.get("EndpointID"), str)]


class _Stop:
    """A stop handle that runs a function (Background.stop calls .set())."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.set = action
