"""The network driver's records in the store, and the kernel names they hold.

A network or endpoint is recorded *before* its kernel objects are made, in state "creating",
in one transaction with a create-if-absent key for every kernel name it will take
(v1/hosts/<host>/names/<space>/<name>): two networks can never take one bridge name, nor two
endpoints one veth name, whatever the timing, and restore knows exactly what pynet may have
made. Once the kernel work is done the record is CAS'd to "ready". Both writes are fenced
(pynet_core/store/fenced.py): a write of a failed attempt that lands after pynet gave up is
removed once the store answers again, so no record outlives an attempt Docker saw fail.
Links that no record names are never pynet's to remove.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from pynet_core.errors import BackendUnavailable, BadRecord, Conflict, StoreContention
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import bad_records, keys, records
from pynet_core.store.api import Entry, Op, Store
from pynet_core.store.fenced import FencedWrites, claim_id

from . import models, naming
from .models import READY, EndpointRecord, NetworkRecord

log = logging.getLogger(__name__)

Name = tuple[str, str]  # (space, name)


def network_names(net: NetworkRecord) -> list[Name]:
    names = [("network", naming.name_key(net.id))]
    if net.bridge:
        names.append(("bridge", net.bridge))
    return names


def endpoint_names(ep: EndpointRecord) -> list[Name]:
    return [("endpoint", naming.name_key(ep.id))]


class Ledger:
    def __init__(self, store: Store, host: str, retries: RetryQueue | None = None) -> None:
        self.store = store
        self.host = host
        self.retries = retries or RetryQueue()
        self.writes = FencedWrites(store, host, self.retries, keys.driver_fence(host))
        # Records decoded once per stored text (records.ParsedOnce): CreateNetwork and
        # DeleteNetwork list every network, every endpoint call reads its network's record
        # (six per container started and removed), the overlay watcher lists this host's
        # endpoints at every sync: decoding each again made them grow with N (issue 22). An
        # unchanged text is the same (immutable) record; any other is decoded and checked.
        self._networks = records.ParsedOnce(network_at)
        self._endpoints = records.ParsedOnce(endpoint_at)

    # --- reading -------------------------------------------------------------------
    # One bad record (written by another client) never hides the others: a listing skips
    # it (logged once per key and version, counted); a call that needs exactly that record
    # answers BadRecord naming its key.
    def network(self, nid: str) -> NetworkRecord | None:
        entry = self.store.get(keys.network(self.host, nid))
        if entry is None:
            return None
        return self._networks(entry)

    def networks(self) -> list[NetworkRecord]:
        entries = self.store.list(keys.networks(self.host))
        found = list(bad_records.readable(entries, self._networks, "network"))
        self._networks.keep({e.key for e in entries})  # the memo never outgrows the store
        return found

    def endpoint(self, nid: str, eid: str) -> EndpointRecord | None:
        entry = self.store.get(keys.endpoint(self.host, nid, eid))
        return None if entry is None else endpoint_at(entry)

    def endpoints(self, nid: str | None = None) -> list[EndpointRecord]:
        entries = self.store.list(keys.endpoints(self.host, nid))
        found = list(bad_records.readable(entries, self._endpoints, "endpoint"))
        if nid is None:  # a listing of every endpoint: the memo keeps only those still there
            self._endpoints.keep({e.key for e in entries})
        return found

    # --- networks ------------------------------------------------------------------
    def begin_network(self, net: NetworkRecord) -> NetworkRecord:
        """Record the intent (state creating) and take its names; Conflict naming the holder
        of a name that is taken."""
        net = replace(net, attempt=claim_id())
        self._begin(keys.network(self.host, net.id), net.to_dict(), network_names(net),
                    {"network": net.id}, lambda: self._forget_network_if(net.id, net.attempt),
                    f"network {net.id[:12]}")
        return net

    def commit_network(self, net: NetworkRecord) -> NetworkRecord:
        ready = replace(net, state=READY)
        self._commit(keys.network(self.host, net.id), ready.to_dict(),
                     lambda: self._forget_network_if(net.id, net.attempt), f"network {net.id[:12]}")
        return ready

    def set_network_state(self, net: NetworkRecord, state: str) -> NetworkRecord:
        changed = replace(net, state=state)
        records.update(self.store, keys.network(self.host, net.id),
                       lambda _current: changed.to_dict(), f"marking network {net.id[:12]} {state}")
        return changed

    def forget_network(self, net: NetworkRecord) -> None:
        """Delete the record and release its names (absent is fine) in one transaction, so
        a crash can never leave a name held by no record; the last network takes the host's
        fence with it."""
        self._forget(keys.network(self.host, net.id), network_names(net), {"network": net.id})
        self._retire_if_idle()

    def _retire_if_idle(self) -> None:
        if not self.store.list(keys.networks(self.host)):
            self.writes.retire()

    def forget_network_later(self, net: NetworkRecord) -> None:
        """forget_network once the store answers, if the record is still this attempt's."""
        self.retries.add(f"removing the record of network {net.id[:12]} (attempt {net.attempt})",
                         lambda: self._forget_network_if(net.id, net.attempt))

    def _forget_network_if(self, nid: str, attempt: str) -> None:
        current = self.network(nid)
        if current is not None and current.attempt == attempt:
            log.warning("removing network record %s of a CreateNetwork that failed", nid[:12])
            self.forget_network(current)
        else:
            self._retire_if_idle()

    # --- endpoints -----------------------------------------------------------------
    def begin_endpoint(self, ep: EndpointRecord) -> EndpointRecord:
        ep = replace(ep, attempt=claim_id())
        self._begin(keys.endpoint(self.host, ep.network_id, ep.id), ep.to_dict(),
                    endpoint_names(ep), {"network": ep.network_id, "endpoint": ep.id},
                    lambda: self._forget_endpoint_if(ep.network_id, ep.id, ep.attempt),
                    f"endpoint {ep.id[:12]}")
        return ep

    def commit_endpoint(self, ep: EndpointRecord) -> EndpointRecord:
        ready = replace(ep, state=READY)
        self._commit(keys.endpoint(self.host, ep.network_id, ep.id), ready.to_dict(),
                     lambda: self._forget_endpoint_if(ep.network_id, ep.id, ep.attempt),
                     f"endpoint {ep.id[:12]}")
        return ready

    def save_endpoint(self, ep: EndpointRecord) -> None:
        records.update(self.store, keys.endpoint(self.host, ep.network_id, ep.id),
                       lambda _current: ep.to_dict(), f"saving endpoint {ep.id[:12]}")

    def forget_endpoint(self, ep: EndpointRecord) -> None:
        self._forget(keys.endpoint(self.host, ep.network_id, ep.id), endpoint_names(ep),
                     {"network": ep.network_id, "endpoint": ep.id})

    def forget_endpoint_later(self, ep: EndpointRecord) -> None:
        self.retries.add(f"removing the record of endpoint {ep.id[:12]} (attempt {ep.attempt})",
                         lambda: self._forget_endpoint_if(ep.network_id, ep.id, ep.attempt))

    def _forget_endpoint_if(self, nid: str, eid: str, attempt: str | None) -> None:
        current = self.endpoint(nid, eid)
        if current is not None and (attempt is None or current.attempt == attempt):
            self.forget_endpoint(current)

    def forget_endpoint_by_id_later(self, nid: str, eid: str) -> None:
        """DeleteEndpoint with the store down: the record goes once it answers."""
        self.retries.add(f"removing the record of endpoint {eid[:12]}",
                         lambda: self._forget_endpoint_if(nid, eid, None))

    # --- names ---------------------------------------------------------------------
    def ensure_names(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """Restore: records from before the name index hold their names too."""
        wanted = [(n, {"network": net.id}) for n in network_names(net)]
        wanted += [(n, {"network": e.network_id, "endpoint": e.id})
                   for e in endpoints for n in endpoint_names(e)]
        for (space, name), owner in wanted:
            key = keys.host_name(self.host, space, name)
            if not self.store.create(key, records.dump(owner)):
                entry = self.store.get(key)
                holder = None if entry is None else _owner(entry)
                if holder != owner:
                    log.error("%s name %s of %s is also held by %s", space, name, owner, holder)

    def _begin(self, key: str, value: dict, names: list[Name], owner: dict, settle, what: str) -> None:
        ops = [Op("create", key, records.dump(value))]
        ops += [Op("create", keys.host_name(self.host, space, name), records.dump(owner))
                for space, name in names]
        for attempt in range(2):
            if self.writes.transaction(ops, lambda _store: settle(),
                                       f"begin {what} {value['attempt']}"):
                return
            if self.store.get(key) is not None:
                raise Conflict(f"{what} was created concurrently")
            orphans = False
            for space, name in names:
                held = self.store.get(keys.host_name(self.host, space, name))
                if held is None:
                    continue
                holder = _owner(held)
                if holder is None:
                    raise BadRecord(held.key, "a kernel name's owner must be a JSON object")
                if holder != owner:
                    raise Conflict(_taken(space, name, holder))
                orphans = True  # this very record's name, left by a deletion interrupted
            if not orphans or attempt:
                break
            self.release_orphan_names()
        raise Conflict(f"{what}: its records changed concurrently; try again")

    def _commit(self, key: str, value: dict, settle, what: str) -> None:
        entry = self.store.get(key)
        if entry is None:
            raise BackendUnavailable(f"the record of {what} vanished while it was being made")
        ops = [Op("cas", key, records.dump(value), entry.version)]
        if not self.writes.transaction(ops, lambda _store: settle(), f"commit {what} {value['attempt']}"):
            raise Conflict(f"the record of {what} changed while it was being made")

    def _forget(self, key: str, names: list[Name], owner: dict) -> None:
        """The record at key and the names owner holds, all in one transaction (each at the
        version read, so a name taken by another record meanwhile stays)."""
        for _ in range(records.MAX_ATTEMPTS):
            ops = []
            entry = self.store.get(key)
            if entry is not None:
                ops.append(Op("delete", key, version=entry.version))
            for space, name in names:
                held = self.store.get(keys.host_name(self.host, space, name))
                if held is not None and _owner(held) == owner:
                    ops.append(Op("delete", held.key, version=held.version))
            if not ops or self.store.transaction(ops):
                return
        raise StoreContention(f"gave up removing {key}: it or its names kept changing")

    def release_orphan_names(self) -> list[str]:
        """Restore: names whose record is gone (a pynet before one-transaction deletes, killed
        between the two steps) are released, each only while its record is still absent.
        Without this the same NetworkID, which Swarm nodes reuse, is refused for good."""
        released = []
        for entry in self.store.list(keys.host_names(self.host)):
            owner = _owner(entry)
            if owner is None:
                continue  # not readable: not provably an orphan
            nid, eid = owner.get("network"), owner.get("endpoint")
            if not isinstance(nid, str) or not (eid is None or isinstance(eid, str)):
                continue
            record = keys.network(self.host, nid) if eid is None else keys.endpoint(self.host, nid, eid)
            if self.store.get(record) is not None:
                continue
            if self.store.transaction([Op("check_absent", record),
                                       Op("delete", entry.key, version=entry.version)]):
                log.warning("released name %s: its record %s is gone (a deletion interrupted)",
                            entry.key, record)
                released.append(entry.key)
        return released


def network_at(entry: Entry) -> NetworkRecord:
    """The network record at entry, or BadRecord naming the key."""
    net = models.decode(NetworkRecord, entry.key, records.checked_load(entry))
    if entry.key.rsplit("/", 1)[-1] != net.id:
        raise BadRecord(entry.key, f"it describes another network ({net.id[:12]})")
    return net


def endpoint_at(entry: Entry) -> EndpointRecord:
    """The endpoint record at entry, or BadRecord naming the key."""
    ep = models.decode(EndpointRecord, entry.key, records.checked_load(entry))
    if not entry.key.endswith(f"/{ep.network_id}/{ep.id}"):
        raise BadRecord(entry.key, f"it describes another endpoint ({ep.network_id[:12]}/{ep.id[:12]})")
    return ep


def _owner(entry: Entry) -> dict | None:
    try:
        owner = records.checked_load(entry)
    except BadRecord:
        return None
    return owner if isinstance(owner, dict) else None


def _taken(space: str, name: str, holder: dict) -> str:
    network = str(holder.get("network", ""))[:12]
    if space == "bridge":
        return f"bridge name {name} is already used by pynet network {network}"
    if space == "network":
        return (f"network ID begins with the same {naming.ID_CHARS} characters ({name}) as pynet "
                f"network {network}; pynet names kernel links after them, so the two would share "
                "links")
    endpoint = str(holder.get("endpoint", ""))[:12]
    return (f"endpoint ID begins with the same {naming.ID_CHARS} characters ({name}) as pynet "
            f"endpoint {endpoint} on network {network}; pynet names kernel links after them, "
            "so the two would share links")
