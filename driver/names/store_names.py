"""Name records in the shared store: this host writes its own, and watches every host's.

- `NamePublisher` makes this host's records (`v1/names/hosts/<host>/`) exactly what it is
  given: new ones created, changed ones replaced, gone ones deleted, each at the version
  read (a lost race is put right at the next publish; nothing else writes there).
- `NameWatcher` keeps a NameTable of every host's names: a blocking watch on
  `v1/names/` (Consul: a blocking query, so another host's write wakes it at once), then
  one listing, each record parsed strictly (records.py); a bad one is skipped, logged once
  per key and version and counted (pynet_core/store/bad_records.py). Another host's records
  are withdrawn (not answered) while that host is dead by the overlay's liveness rule (its
  heartbeat `v1/overlay-alive/<host>` stood still for the peer timeout, judged by this
  host's clock: driver/kinds/overlay/liveness.py). This host's own names never come from the
  store: they are this host's own snapshot (no other writer can speak for it).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from driver.kinds.overlay.claims import AddressClaims, Owner
from driver.kinds.overlay.liveness import Liveness
from driver.kinds.overlay.registry import read_beats
from pynet_core.errors import BackendUnavailable
from pynet_core.store import bad_records, keys
from pynet_core.store.api import Entry, Store

from .records import OVERLAY, InvalidNames, NameEntry, dump, parse_record
from .table import NameTable

log = logging.getLogger(__name__)

KIND = "name"
BEATS_EVERY = 1.0  # seconds between reads of the heartbeats by the watcher


@dataclass(frozen=True)
class Published:
    created: int = 0
    replaced: int = 0
    removed: int = 0
    lost: int = 0  # writes that lost a race: put right at the next publish

    def count(self) -> int:
        return self.created + self.replaced + self.removed


class NamePublisher:
    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.host = host
        self._lock = threading.Lock()  # one publish at a time: each diffs a fresh listing

    def publish(self, wanted: Mapping[str, NameEntry]) -> Published:
        """Make this host's records exactly `wanted` (endpoint id -> record)."""
        tally = _Tally()
        with self._lock:
            held: dict[str, Entry] = {}
            for entry in self.store.list(keys.names_host(self.host)):
                parsed = keys.parse_name_key(entry.key)
                eid = parsed[1] if parsed is not None and parsed[0] == self.host else None
                if eid is None or eid not in wanted:
                    # Gone (or a key of no shape pynet writes, under this host's own prefix).
                    tally.removed_or_lost(self.store.delete(entry.key, entry.version))
                    continue
                held[eid] = entry
            for eid, named in wanted.items():
                self._write(keys.name_record(self.host, eid), dump(named), held.get(eid), tally)
        return tally.published()

    def publish_changes(self, before: Mapping[str, NameEntry],
                        after: Mapping[str, NameEntry]) -> Published:
        """Store only what changed from `before` (what the last publish made) to `after`,
        without listing this host's records: a look at one container costs one write, not
        a listing of every record. A write that finds the store otherwise than `before`
        said is put right here (read, then written at the version read)."""
        tally = _Tally()
        with self._lock:
            for eid in before.keys() - after.keys():
                key = keys.name_record(self.host, eid)
                entry = self.store.get(key)
                if entry is not None:
                    tally.removed_or_lost(self.store.delete(key, entry.version))
            for eid, named in after.items():
                value = dump(named)
                if eid in before and dump(before[eid]) == value:
                    continue
                key = keys.name_record(self.host, eid)
                if eid not in before and self.store.create(key, value):
                    tally.created += 1
                    continue
                self._write(key, value, self.store.get(key), tally)
        return tally.published()

    def _write(self, key: str, value: str, held: Entry | None, tally: _Tally) -> None:
        """Create `key` when nothing is held there, or replace what is held (at its version)
        unless it says `value` already."""
        if held is None:
            ok = self.store.create(key, value)
            tally.created += ok
        elif held.value != value:
            ok = self.store.cas(key, value, held.version)
            tally.replaced += ok
        else:
            return
        tally.lost += not ok


@dataclass
class _Tally:
    """What one publish did so far (Published is its frozen answer)."""
    created: int = 0
    replaced: int = 0
    removed: int = 0
    lost: int = 0

    def removed_or_lost(self, deleted: bool) -> None:
        self.removed += deleted
        self.lost += not deleted

    def published(self) -> Published:
        return Published(self.created, self.replaced, self.removed, self.lost)


def retire(store: Store, host: str) -> None:
    """This host's name records, all gone: a pynet started without --dns-addr publishes no
    names, so those an earlier run left must not be answered by other hosts. Best effort:
    with the store down they stay until the next start."""
    try:
        removed = NamePublisher(store, host).publish({}).removed
    except BackendUnavailable:
        return
    except Exception:  # noqa: BLE001 - never a reason for start-up to fail
        log.warning("names: this host's old name records could not be removed", exc_info=True)
        return
    if removed:
        log.info("names: removed %d name record(s) of this host (pynet DNS is off)", removed)


def read_names(entries: Iterable[Entry]) -> list[NameEntry]:
    """Every readable record of a listing; a bad one skipped through bad_records."""
    return [named for _, named in _read(entries)]


def _read(entries: Iterable[Entry]) -> list[tuple[Entry, NameEntry]]:
    found = []
    for entry in entries:
        try:
            found.append((entry, parse_record(entry.key, entry.value)))
        except InvalidNames as exc:
            bad_records.skipped(entry, exc.reason, KIND)
    return found


class RecentClaims:
    """A pool's claims as last read, read again when older than `max_age` or when a record
    names an address they do not give its host (once per refresh): in a burst of new
    containers most refreshes find every address in a read of a moment ago, and each record
    is still believed only on a claim read at most `max_age` seconds before."""

    def __init__(self, claims: AddressClaims, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.claims = claims
        self.max_age = max_age
        self.clock = clock
        self._read: dict[tuple[str, str], tuple[float, Mapping[str, Owner]]] = {}
        self._refresh_started = clock()

    def start_refresh(self) -> None:
        self._refresh_started = self.clock()

    def owner(self, space: str, pool: str, address: str, host: str) -> Owner | None:
        now = self.clock()
        held = self._read.get((space, pool))
        if held is not None and now - held[0] < self.max_age:
            owner = held[1].get(address)
            if (owner is not None and owner[0] == host) or held[0] >= self._refresh_started:
                return owner
        owners = self.claims.owners(space, pool)
        self._read[(space, pool)] = (now, owners)
        return owners.get(address)


def claimed(found: list[tuple[Entry, NameEntry]], claims: AddressClaims | RecentClaims
            ) -> list[NameEntry]:
    """The records whose IPv4 address is an IPAM claim held by the record's own host in its
    overlay's pool (as the overlay believes a peer: driver/kinds/overlay/admission.py); any
    other is skipped through bad_records: no host names another host's address."""
    recent = claims if isinstance(claims, RecentClaims) else RecentClaims(claims)
    recent.start_refresh()
    kept = []
    for entry, named in found:
        if named.ipv4 is not None:
            owner = recent.owner(named.network.space, named.network.subnet, named.ipv4, named.host)
            if owner is None or owner[0] != named.host:
                held = f"host {owner[0]!r}'s" if owner is not None else "nobody's"
                bad_records.skipped(entry, f"its address {named.ipv4} is {held} claim in "
                                           f"{named.network.subnet}, not host {named.host!r}'s", KIND)
                continue
        kept.append(named)
    return kept


class NameWatcher:
    """Every host's names as one NameTable, handed to `on_table` after each change."""

    def __init__(self, store: Store, host: str, peer_timeout: float,
                 local: Callable[[], Iterable[NameEntry]],
                 on_table: Callable[[NameTable], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.host = host
        self.local = local
        self.on_table = on_table
        self.clock = clock
        self.liveness = Liveness(peer_timeout)
        self.interval = peer_timeout / 3
        self._remote: list[NameEntry] = []
        self._alive: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._dead: set[str] = set()
        self.refreshes = 0   # completed reads of the store (tests wait on it)
        self._cache: dict[str, tuple[int, str, NameEntry | InvalidNames]] = {}
        # The IPAM's address claims (wired by the composition root, as for the overlay's
        # peers); None: a remote record's address is not checked against them.
        self.claims: AddressClaims | None = None
        self._recent_claims: RecentClaims | None = None
        self._beats: tuple[float, dict[str, int]] | None = None  # (read at, heartbeats)
        self.table = NameTable()

    def refresh(self) -> NameTable:
        """Read every host's records and heartbeats, then rebuild the table."""
        entries = self.store.list(keys.names_all())
        # The heartbeats at most once a second (a burst of name writes wakes this at each):
        # liveness is judged in seconds (the peer timeout), so a second's lag is nothing.
        now = self.clock()
        beats = None
        if self._beats is None or now - self._beats[0] >= BEATS_EVERY or now < self._beats[0]:
            beats = read_beats(self.store)
            self._beats = (now, beats)
        # Another host's names on its own (bridge, macvlan) networks reach no asker here.
        found = [(e, n) for e, n in self._parsed(entries)
                 if n.host != self.host and n.network.kind == OVERLAY]
        if self.claims is not None:
            if self._recent_claims is None or self._recent_claims.claims is not self.claims:
                self._recent_claims = RecentClaims(self.claims)
            remote = claimed(found, self._recent_claims)
        else:
            remote = [n for _, n in found]
        now = self.clock()
        with self._lock:
            hosts = {n.host for n in remote}
            if beats is not None:
                self.liveness.observe({h: v for h, v in beats.items() if h != self.host}, hosts, now)
            alive = frozenset(h for h in hosts if self.liveness.alive(h, now))
            self._report(hosts - alive)
            self._remote, self._alive = remote, alive
            self.refreshes += 1
        return self.rebuild()

    def _parsed(self, entries: list[Entry]) -> list[tuple[Entry, NameEntry]]:
        """_read() of the listing, each record parsed once per key, version and value (a
        change anywhere re-reads every record; 3,000 of them parse in ~0.1 s)."""
        cache, fresh = self._cache, {}
        found = []
        for entry in entries:
            seen = cache.get(entry.key)
            if seen is not None and seen[0] == entry.version and seen[1] == entry.value:
                named = seen[2]
            else:
                try:
                    named = parse_record(entry.key, entry.value)
                except InvalidNames as exc:
                    named = exc
            fresh[entry.key] = (entry.version, entry.value, named)
            if isinstance(named, InvalidNames):
                bad_records.skipped(entry, named.reason, KIND)  # logged once, counted each time
            else:
                found.append((entry, named))
        self._cache = fresh
        return found

    def rebuild(self) -> NameTable:
        """The table of this host's own names (now) and the live hosts' last read."""
        with self._lock:
            remote = [n for n in self._remote if n.host in self._alive]
            table = NameTable.of([n.record() for n in self.local()] +
                                 [n.record() for n in remote])
            self.table = table
            # Under the lock: two rebuilds (a look, a watch) hand their tables over in order.
            self.on_table(table)
        return table

    def _report(self, dead: set[str]) -> None:
        for host in sorted(dead - self._dead):
            log.warning("names: host %s has not moved its heartbeat for %g s: its names are "
                        "no longer answered", host, self.liveness.timeout)
        for host in sorted(self._dead - dead):
            log.info("names: host %s is back; its names are answered again", host)
        self._dead = set(dead)

    def run(self, stop: threading.Event) -> None:
        index, failing = 0, False
        while not stop.is_set():
            try:
                index = self.store.watch(keys.names_all(), index, self.interval)
                if stop.is_set():
                    return
                if failing:
                    self.liveness.forgive(self.clock())
                    log.info("names: the store answers again; catching up")
                    failing = False
                woken = time.perf_counter()
                table = self.refresh()
                log.debug("names: table of %d name(s) rebuilt in %.1f ms after the watch returned",
                          len(table), (time.perf_counter() - woken) * 1e3)
            except BackendUnavailable as exc:
                if not failing:
                    log.warning("names: %s; the names last read are answered meanwhile",
                                exc.message)
                failing = True
                index = 0
                stop.wait(min(self.interval, 1.0))
            except Exception:  # a bug must not end the thread for good
                log.exception("names watcher failed; trying again")
                stop.wait(1.0)

    def start(self) -> threading.Event:
        stop = threading.Event()
        threading.Thread(target=self.run, args=(stop,), name="pynet-names-watcher",
                         daemon=True).start()
        return stop
