"""NetworkDriver calls: records in the store, kernel work delegated to the network's kind.

Every method is idempotent (Docker repeats calls after restarts and rolls back with
Delete/Leave after failures) and leaves nothing half made when it fails. Requests and
answers are driver/protocol.py's types; what differs between network types is the kind's.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import replace

from pynet.errors import BadRequest, Conflict, NotFound
from pynet.store import keys, records
from pynet.store.api import Store
from pynet.wire import printable

from . import naming
from .kinds.base import NetworkKind
from .models import EndpointRecord, NetworkRecord
from .portmap import resolve_host_ips
from .protocol import (CreateEndpoint, CreateEndpointAnswer, CreateNetwork, EndpointCall,
                       EndpointInfo, Join, JoinAnswer, NetworkCall, ProgramExternal)

log = logging.getLogger(__name__)


class NetworkService:
    def __init__(self, store: Store, host: str, kinds: dict[str, NetworkKind]) -> None:
        self.store = store
        self.host = host
        self.kinds = kinds
        # Calls on one network are serialised in-process; this only avoids wasted work,
        # correctness across processes and hosts comes from the store's CAS.
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        # CreateNetwork and DeleteNetwork of all networks, one at a time: a kind checks a new
        # network against the others' records (a bridge name, a shared parent), and that
        # check must not race the record it protects. Network changes are rare; endpoint
        # calls never take this lock.
        self._topology = threading.Lock()
        # Endpoint calls that make or remove an endpoint's links, one at a time per name key
        # (naming.name_key): endpoints on two networks whose IDs begin alike would otherwise
        # both pass the uniqueness check below, then share (and delete) one veth.
        self._link_names: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    # --- records -------------------------------------------------------------------
    def network(self, nid: str) -> NetworkRecord | None:
        data = records.read(self.store, keys.network(self.host, nid))
        return NetworkRecord.from_dict(data) if data else None

    def networks(self) -> list[NetworkRecord]:
        return [NetworkRecord.from_dict(records.load(e))
                for e in self.store.list(keys.networks(self.host))]

    def endpoints(self, nid: str | None = None) -> list[EndpointRecord]:
        return [EndpointRecord.from_dict(records.load(e))
                for e in self.store.list(keys.endpoints(self.host, nid))]

    def _endpoint(self, nid: str, eid: str) -> EndpointRecord | None:
        data = records.read(self.store, keys.endpoint(self.host, nid, eid))
        return EndpointRecord.from_dict(data) if data else None

    def _require_network(self, nid: str) -> NetworkRecord:
        net = self.network(nid)
        if net is None:
            raise NotFound(f"network {nid[:12]} is not a pynet network on this host")
        return net

    def _require_endpoint(self, nid: str, eid: str) -> EndpointRecord:
        ep = self._endpoint(nid, eid)
        if ep is None:
            raise NotFound(f"endpoint {eid[:12]} does not exist on network {nid[:12]}")
        return ep

    def _kind(self, net: NetworkRecord) -> NetworkKind:
        return self.kinds[net.options.type]

    # --- NetworkDriver.CreateNetwork / DeleteNetwork --------------------------------
    def create_network(self, req: CreateNetwork) -> None:
        nid = req.network_id
        with self._topology, self._locks[nid]:
            if (existing := self.network(nid)) is not None:
                self._kind(existing).restore_network(existing, self.endpoints(nid))
                return
            net = NetworkRecord(id=nid, options=req.options, gateways=req.gateways,
                                subnets=req.subnets)
            others = self.networks()
            _refuse_name_twin("network", nid, [(o.id, o.id) for o in others], nid)
            with ExitStack() as undo:
                net = self._kind(net).create_network(net, others, undo)
                # Kernel first, record last: a crash in between leaves only a pn- link,
                # which restore removes as an orphan.
                if not self.store.create(keys.network(self.host, nid), records.dump(net.to_dict())):
                    raise Conflict(f"network {nid[:12]} was created concurrently")
                undo.pop_all()
        log.info("network %s: %s on %s %s", nid[:12], net.options.type, net.bridge or net.lower,
                 ",".join(net.gateways))

    def delete_network(self, req: NetworkCall) -> None:
        nid = req.network_id
        with self._topology, self._locks[nid]:
            net = self.network(nid)
            if net is None:
                return
            kind = self._kind(net)
            # Record first: a crash after it leaves kernel objects that restore removes.
            stale = self.endpoints(nid)
            for ep in stale:
                self.store.delete(keys.endpoint(self.host, nid, ep.id))
            self.store.delete(keys.network(self.host, nid))
            for ep in stale:
                with self._link_names[naming.name_key(ep.id)]:
                    kind.delete_endpoint(net, ep)
            kind.delete_network(net, [o for o in self.networks() if o.id != nid])
        self._locks.pop(nid, None)

    # --- NetworkDriver.CreateEndpoint / DeleteEndpoint ------------------------------
    def create_endpoint(self, req: CreateEndpoint) -> CreateEndpointAnswer:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks[nid], self._link_names[naming.name_key(eid)]:
            net = self._require_network(nid)
            ep = self._endpoint(nid, eid)
            if ep is None:
                # Before any kernel work: the kind takes links of this endpoint's names for
                # leftovers of its own.
                _refuse_name_twin("endpoint", eid,
                                  [(o.id, o.network_id) for o in self.endpoints()], nid)
                ep = EndpointRecord(
                    network_id=nid, id=eid, host_if=None, peer_if=naming.peer_veth(eid),
                    addresses=tuple(a for a in (req.address, req.address_v6) if a),
                    mac=req.mac or naming.mac_for(eid, req.address or None),
                    options=req.options, kind=net.options.type,
                )
                with ExitStack() as undo:
                    # The kind fills in its links (and may change the MAC: passthru macvlan).
                    ep = self._kind(net).create_endpoint(net, ep, undo)
                    self.store.create(keys.endpoint(self.host, nid, eid), records.dump(ep.to_dict()))
                    undo.pop_all()
        return CreateEndpointAnswer(None if req.mac else ep.mac)

    def delete_endpoint(self, req: EndpointCall) -> None:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks[nid], self._link_names[naming.name_key(eid)]:
            ep = self._endpoint(nid, eid)
            if ep is None:
                return
            net = self.network(nid)
            self.store.delete(keys.endpoint(self.host, nid, eid))
            # The endpoint's own kind removes its links, even when the network went first.
            self.kinds[ep.kind].delete_endpoint(net, ep)

    def endpoint_info(self, req: EndpointCall) -> EndpointInfo:
        ep = self._require_endpoint(req.network_id, req.endpoint_id)
        return EndpointInfo(ep.peer_if, ep.mac)

    # --- NetworkDriver.Join / Leave -------------------------------------------------
    def join(self, req: Join) -> JoinAnswer:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks[nid]:
            net = self._require_network(nid)
            ep = self._require_endpoint(nid, eid)
            answer = self._kind(net).join(net, ep, req.sandbox_key)
            if ep.sandbox != req.sandbox_key:
                _save(self.store, keys.endpoint(self.host, nid, eid),
                      replace(ep, sandbox=req.sandbox_key))
        return answer

    def leave(self, req: EndpointCall) -> None:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks[nid]:
            ep = self._endpoint(nid, eid)
            if ep is not None and ep.sandbox is not None:
                _save(self.store, keys.endpoint(self.host, nid, eid), replace(ep, sandbox=None))

    # --- NetworkDriver.ProgramExternalConnectivity / RevokeExternalConnectivity -----
    def program_external(self, req: ProgramExternal) -> None:
        """Publish the requested ports (Docker calls this after Join, for the endpoint that
        gives the container its gateway). The chosen host ports are recorded so a restarted
        plugin re-installs them. Idempotent: the same ports again change nothing; other
        ports replace them. A port in use fails the call and leaves nothing behind. Networks
        whose kind publishes nothing answer at once."""
        nid, eid = req.network_id, req.endpoint_id
        with self._locks[nid]:
            try:
                net = self._require_network(nid)
                ep = self._require_endpoint(nid, eid)
            except NotFound as exc:
                # Never 404 here: Docker reads that as "not supported" and starts the
                # container without its ports.
                raise BadRequest(exc.message) from None
            kind = self._kind(net)
            if not kind.publishes(net):
                return
            requests = resolve_host_ips(req.ports, net.options.host_binding_ipv4)
            if tuple(b.request for b in ep.published) == requests:
                return
            key = keys.endpoint(self.host, nid, eid)
            if ep.published:
                ep = replace(ep, published=())
                _save(self.store, key, ep)
                kind.unpublish(net, ep)
            with ExitStack() as undo:
                bindings = kind.publish(net, ep, requests)
                undo.callback(kind.unpublish, net, ep)
                _save(self.store, key, replace(ep, published=bindings))
                undo.pop_all()
        for b in bindings:
            log.info("endpoint %s: published %s", eid[:12], b.describe())

    def revoke_external(self, req: EndpointCall) -> None:
        """Unpublish the endpoint's ports (before Leave). Absent is fine."""
        nid, eid = req.network_id, req.endpoint_id
        with self._locks[nid]:
            net, ep = self.network(nid), self._endpoint(nid, eid)
            if net is None or ep is None or not ep.published:
                return
            # Record first: ports a crash leaves installed are dropped by the next sync.
            _save(self.store, keys.endpoint(self.host, nid, eid), replace(ep, published=()))
            self._kind(net).unpublish(net, ep)


def _refuse_name_twin(what: str, object_id: str, recorded: list[tuple[str, str]],
                      network_id: str) -> None:
    """Kernel names carry only the first naming.ID_CHARS characters of an ID: a second
    network or endpoint whose ID begins like a recorded one (or an endpoint ID recorded on
    another network) would take over that one's links. RECORDED: (ID, its network ID)."""
    key = naming.name_key(object_id)
    twin = next(((other, on) for other, on in recorded
                 if naming.name_key(other) == key and (other, on) != (object_id, network_id)), None)
    if twin is not None:
        where = "" if what == "network" else f" on network {twin[1][:12]}"
        raise Conflict(f"{what} ID {printable(object_id, 24)} begins with the same "
                       f"{naming.ID_CHARS} characters as pynet {what} {printable(twin[0], 24)}"
                       f"{where}; pynet names kernel links after them, so the two would share "
                       f"links")


def _save(store: Store, key: str, ep: EndpointRecord) -> None:
    records.update(store, key, lambda _current: ep.to_dict(), f"saving endpoint {ep.id[:12]}")
