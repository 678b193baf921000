"""The network driver's records in the store, and the kernel names they hold.

A network or endpoint is recorded *before* its kernel objects are made, in state "creating",
in one transaction with a create-if-absent key for every kernel name it will take
(v1/hosts/<host>/names/<space>/<name>): two networks can never take one bridge name, nor two
endpoints one veth name, whatever the timing, and restore knows exactly what pynet may have
made. Once the kernel work is done the record is CAS'd to "ready". Both writes are fenced
(pynet/store/fenced.py): a write of a failed attempt that lands after pynet gave up is
removed once the store answers again, so no record outlives an attempt Docker saw fail.
Links that no record names are never pynet's to remove.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from pynet.errors import BackendUnavailable, Conflict
from pynet.repair import RepairQueue
from pynet.store import keys, records
from pynet.store.api import Op, Store
from pynet.store.fenced import FencedWrites, claim_id

from . import naming
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
    def __init__(self, store: Store, host: str, repairs: RepairQueue | None = None) -> None:
        self.store = store
        self.host = host
        self.repairs = repairs or RepairQueue()
        self.writes = FencedWrites(store, host, self.repairs, keys.driver_fence(host))

    # --- reading -------------------------------------------------------------------
    def network(self, nid: str) -> NetworkRecord | None:
        data = records.read(self.store, keys.network(self.host, nid))
        return NetworkRecord.from_dict(data) if data else None

    def networks(self) -> list[NetworkRecord]:
        return [NetworkRecord.from_dict(records.load(e))
                for e in self.store.list(keys.networks(self.host))]

    def endpoint(self, nid: str, eid: str) -> EndpointRecord | None:
        data = records.read(self.store, keys.endpoint(self.host, nid, eid))
        return EndpointRecord.from_dict(data) if data else None

    def endpoints(self, nid: str | None = None) -> list[EndpointRecord]:
        return [EndpointRecord.from_dict(records.load(e))
                for e in self.store.list(keys.endpoints(self.host, nid))]

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
        """Delete the record and release its names (absent is fine); the last network
        takes the host's fence with it."""
        self.store.delete(keys.network(self.host, net.id))
        self._release_names(network_names(net), {"network": net.id})
        self._retire_if_idle()

    def _retire_if_idle(self) -> None:
        if not self.store.list(keys.networks(self.host)):
            self.writes.retire()

    def forget_network_later(self, net: NetworkRecord) -> None:
        """forget_network once the store answers, if the record is still this attempt's."""
        self.repairs.add(f"removing the record of network {net.id[:12]} (attempt {net.attempt})",
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
        self.store.delete(keys.endpoint(self.host, ep.network_id, ep.id))
        self._release_names(endpoint_names(ep), {"network": ep.network_id, "endpoint": ep.id})

    def forget_endpoint_later(self, ep: EndpointRecord) -> None:
        self.repairs.add(f"removing the record of endpoint {ep.id[:12]} (attempt {ep.attempt})",
                         lambda: self._forget_endpoint_if(ep.network_id, ep.id, ep.attempt))

    def _forget_endpoint_if(self, nid: str, eid: str, attempt: str | None) -> None:
        current = self.endpoint(nid, eid)
        if current is not None and (attempt is None or current.attempt == attempt):
            self.forget_endpoint(current)

    def forget_endpoint_by_id_later(self, nid: str, eid: str) -> None:
        """DeleteEndpoint with the store down: the record goes once it answers."""
        self.repairs.add(f"removing the record of endpoint {eid[:12]}",
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
                holder = records.read(self.store, key)
                if holder != owner:
                    log.error("%s name %s of %s is also held by %s", space, name, owner, holder)

    def _begin(self, key: str, value: dict, names: list[Name], owner: dict, settle, what: str) -> None:
        ops = [Op("create", key, records.dump(value))]
        ops += [Op("create", keys.host_name(self.host, space, name), records.dump(owner))
                for space, name in names]
        if self.writes.transaction(ops, lambda _store: settle(), f"begin {what} {value['attempt']}"):
            return
        if self.store.get(key) is not None:
            raise Conflict(f"{what} was created concurrently")
        for space, name in names:
            holder = records.read(self.store, keys.host_name(self.host, space, name))
            if holder is not None and holder != owner:
                raise Conflict(_taken(space, name, holder))
        raise Conflict(f"{what}: its records changed concurrently; try again")

    def _commit(self, key: str, value: dict, settle, what: str) -> None:
        entry = self.store.get(key)
        if entry is None:
            raise BackendUnavailable(f"the record of {what} vanished while it was being made")
        ops = [Op("cas", key, records.dump(value), entry.version)]
        if not self.writes.transaction(ops, lambda _store: settle(), f"commit {what} {value['attempt']}"):
            raise Conflict(f"the record of {what} changed while it was being made")

    def _release_names(self, names: list[Name], owner: dict) -> None:
        for space, name in names:
            key = keys.host_name(self.host, space, name)
            entry = self.store.get(key)
            if entry is not None and records.load(entry) == owner:
                self.store.delete(key, entry.version)


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
