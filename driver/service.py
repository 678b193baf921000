"""NetworkDriver calls: records in the store (ledger.py), kernel work delegated to the kind.

Every method is idempotent (Docker repeats calls after restarts and rolls back with
Delete/Leave after failures) and leaves nothing half made when it fails. A network or an
endpoint is recorded as an intent before its kernel objects are made and marked before they
are removed, so a plugin killed at any moment comes back knowing exactly what to finish
(restore.py). Requests and answers are driver/protocol.py's types; what differs between
network types is the kind's.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
from contextlib import ExitStack
from dataclasses import replace

from pynet_core.errors import BackendUnavailable, NotFound
from pynet_core.retry_queue import RetryQueue
from pynet_core.store.api import Store

from . import naming
from .call_locks import CallLocks
from .kinds.base import NetworkKind
from .ledger import Ledger
from .models import CREATING, DELETING, READY, EndpointRecord, NetworkRecord
from .portmap import resolve_host_ips
from .protocol import (CreateEndpoint, CreateEndpointAnswer, CreateNetwork, EndpointCall,
                       EndpointInfo, Join, JoinAnswer, NetworkCall, ProgramExternal)
from .swarm import refuse_swarm_network_on_local_scope

log = logging.getLogger(__name__)


class NetworkService:
    def __init__(self, store: Store, host: str, kinds: dict[str, NetworkKind],
                 retries: RetryQueue | None = None, scope: str = "local") -> None:
        self.store = store
        self.host = host
        self.kinds = kinds
        # The driver scope pynet announced (GetCapabilities): with "local", a swarm
        # network reaching CreateNetwork is Swarm's silent node-local fallback (swarm.py).
        self.scope = scope
        self.ledger = Ledger(store, host, retries)
        # Endpoint calls of one network run side by side, one at a time per endpoint;
        # CreateNetwork/DeleteNetwork alone (call_locks.py). This only avoids wasted work,
        # correctness across processes and hosts comes from the store's CAS.
        self._locks = CallLocks()
        # CreateNetwork and DeleteNetwork of all networks, one at a time: a kind checks a new
        # network against the others' records (a bridge name, a shared parent), and a record
        # that is not ready is known to belong to no call in flight. Network changes are rare;
        # endpoint calls never take this lock.
        self._topology = threading.Lock()
        # Endpoint calls that make or remove links, one at a time per name key: endpoints on
        # two networks whose IDs begin alike name the same links (self._link_names(eid)).

    # --- records -------------------------------------------------------------------
    def network(self, nid: str) -> NetworkRecord | None:
        return self.ledger.network(nid)

    def networks(self) -> list[NetworkRecord]:
        return self.ledger.networks()

    def endpoints(self, nid: str | None = None) -> list[EndpointRecord]:
        return self.ledger.endpoints(nid)

    def _require_network(self, nid: str) -> NetworkRecord:
        net = self.ledger.network(nid)
        if net is None or net.state != READY:
            raise NotFound(f"network {nid[:12]} is not a pynet network on this host")
        return net

    def _require_endpoint(self, nid: str, eid: str) -> EndpointRecord:
        ep = self.ledger.endpoint(nid, eid)
        if ep is None or ep.state != READY:
            raise NotFound(f"endpoint {eid[:12]} does not exist on network {nid[:12]}")
        return ep

    def _link_names(self, eid: str):
        return self._locks.key(f"links/{naming.name_key(eid)}")

    def _kind(self, net: NetworkRecord) -> NetworkKind:
        return self.kinds[net.kind]

    # --- NetworkDriver.CreateNetwork / DeleteNetwork --------------------------------
    def create_network(self, req: CreateNetwork) -> None:
        nid = req.network_id
        with self._topology, self._locks.network(nid):
            recorded = self.ledger.networks()
            others = [o for o in recorded if o.state == READY]
            for stale in (o for o in recorded if o.state != READY):
                # Under the topology lock no call owns a record that is not ready: it is an
                # attempt or a deletion that failed or was interrupted.
                self.remove_network(stale, others)
            existing = next((o for o in others if o.id == nid), None)
            if existing is not None:
                self._kind(existing).restore_network(existing, self.ledger.endpoints(nid))
                return
            if self.scope == "local":
                refuse_swarm_network_on_local_scope(nid)
            draft = NetworkRecord(id=nid, options=req.options, gateways=req.gateways,
                                  subnets=req.subnets, address_space=req.address_space,
                                  state=CREATING)
            kind = self._kind(draft)
            net = self.ledger.begin_network(kind.plan_network(draft, others))
            try:
                with ExitStack() as undo:
                    net = kind.create_network(net, undo)
                    net = self.ledger.commit_network(net)
                    undo.pop_all()
            except BaseException:
                self._forget_network(net)
                raise
        log.info("network %s: %s on %s %s", nid[:12], net.kind, net.bridge or net.lower or net.netns,
                 ",".join(net.gateways))

    def delete_network(self, req: NetworkCall) -> None:
        nid = req.network_id
        with self._topology, self._locks.network(nid):
            net = self.ledger.network(nid)
            if net is None:
                return
            # The intent first: a crash from here on is finished by restore.
            if net.state != DELETING:
                net = self.ledger.set_network_state(net, DELETING)
            self.remove_network(net, [o for o in self.ledger.networks() if o.id != nid])

    def reclaim_network(self, nid: str, attempt: str) -> bool:
        """DeleteNetwork for a network Docker abandoned (driver/leaks.py), if its record is
        still that attempt's."""
        net = self.ledger.network(nid)
        if net is None or net.attempt != attempt:
            return False
        self.delete_network(NetworkCall(nid))
        return True

    def remove_network(self, net: NetworkRecord, others: list[NetworkRecord]) -> None:
        """Remove what the record says pynet made for the network and its endpoints, then
        the records (a deletion, or an attempt a crash interrupted)."""
        kind = self._kind(net)
        for ep in self.ledger.endpoints(net.id):
            with self._link_names(ep.id):
                self.kinds[ep.kind].delete_endpoint(net, ep)
                self.ledger.forget_endpoint(ep)
        kind.delete_network(net, [o for o in others if o.id != net.id])
        self.ledger.forget_network(net)
        if net.state == CREATING:
            log.warning("removed network %s: its CreateNetwork was interrupted", net.id[:12])

    def _forget_network(self, net: NetworkRecord) -> None:
        """A failed create: its records go now, or once the store answers."""
        try:
            self.ledger.forget_network(net)
        except BackendUnavailable:
            self.ledger.forget_network_later(net)

    # --- NetworkDriver.CreateEndpoint / DeleteEndpoint ------------------------------
    def create_endpoint(self, req: CreateEndpoint) -> CreateEndpointAnswer:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks.endpoint(nid, eid), self._link_names(eid):
            net = self._require_network(nid)
            ep = self.ledger.endpoint(nid, eid)
            if ep is not None and ep.state != READY:
                self.remove_endpoint(net, ep)  # an earlier attempt, interrupted
                ep = None
            if ep is None:
                draft = EndpointRecord(
                    network_id=nid, id=eid, host_if=None, peer_if=naming.peer_veth(eid),
                    addresses=tuple(a for a in (req.address, req.address_v6) if a),
                    mac=req.mac or naming.mac_for(eid, req.address or None),
                    options=req.options, kind=net.kind, state=CREATING,
                )
                kind = self._kind(net)
                # The intent (and the link names, which no other endpoint may hold) first.
                ep = self.ledger.begin_endpoint(kind.plan_endpoint(net, draft))
                try:
                    with ExitStack() as undo:
                        ep = kind.create_endpoint(net, ep, undo)
                        ep = self.ledger.commit_endpoint(ep)
                        undo.pop_all()
                except BaseException:
                    self._forget_endpoint(ep)
                    raise
        return CreateEndpointAnswer(None if req.mac else ep.mac)

    def delete_endpoint(self, req: EndpointCall) -> None:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks.endpoint(nid, eid), self._link_names(eid):
            ep = self.ledger.endpoint(nid, eid)
            if ep is None:
                return
            if ep.state != DELETING:
                ep = replace(ep, state=DELETING)
                self.ledger.save_endpoint(ep)  # the intent first: restore finishes a crash
            self.remove_endpoint(self.ledger.network(nid), ep)

    def reclaim_endpoint(self, nid: str, eid: str, attempt: str) -> bool:
        """DeleteEndpoint for an endpoint Docker abandoned (driver/leaks.py)."""
        with self._locks.endpoint(nid, eid), self._link_names(eid):
            ep = self.ledger.endpoint(nid, eid)
            if ep is None or ep.attempt != attempt:
                return False
        self.delete_endpoint(EndpointCall(nid, eid))
        return True

    def remove_endpoint(self, net: NetworkRecord | None, ep: EndpointRecord) -> None:
        # The endpoint's own kind removes its links, even when the network went first.
        self.kinds[ep.kind].delete_endpoint(net, ep)
        self.ledger.forget_endpoint(ep)

    def _forget_endpoint(self, ep: EndpointRecord) -> None:
        try:
            self.ledger.forget_endpoint(ep)
        except BackendUnavailable:
            self.ledger.forget_endpoint_later(ep)

    def endpoint_info(self, req: EndpointCall) -> EndpointInfo:
        ep = self._require_endpoint(req.network_id, req.endpoint_id)
        return EndpointInfo(ep.peer_if, ep.mac)

    # --- NetworkDriver.Join / Leave -------------------------------------------------
    def join(self, req: Join) -> JoinAnswer:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks.endpoint(nid, eid):
            net = self._require_network(nid)
            ep = self._require_endpoint(nid, eid)
            answer = self._kind(net).join(net, ep, req.sandbox_key)
            if ep.sandbox != req.sandbox_key:
                self.ledger.save_endpoint(replace(ep, sandbox=req.sandbox_key))
        return answer

    def leave(self, req: EndpointCall) -> None:
        nid, eid = req.network_id, req.endpoint_id
        with self._locks.endpoint(nid, eid):
            ep = self.ledger.endpoint(nid, eid)
            if ep is not None and ep.published:
                # Docker 29 sends RevokeExternalConnectivity only for endpoints it saw Join
                # since it started: after a daemon restart it never comes, so the ports go here.
                net, was = self.ledger.network(nid), ep
                ep = replace(ep, published=())
                self.ledger.save_endpoint(ep)  # record first, as in revoke_external
                if net is not None:
                    self._kind(net).unpublish(net, was)
            if ep is not None and ep.sandbox is not None:
                self.ledger.save_endpoint(replace(ep, sandbox=None))

    # --- NetworkDriver.ProgramExternalConnectivity / RevokeExternalConnectivity -----
    def program_external(self, req: ProgramExternal) -> None:
        """Publish the requested ports (Docker calls this after Join, for the endpoint that
        gives the container its gateway). The chosen host ports are recorded so a restarted
        plugin re-installs them. Idempotent: the same ports again change nothing; other
        ports replace them. A port in use fails the call and leaves nothing behind. Networks
        whose kind publishes nothing answer at once."""
        nid, eid = req.network_id, req.endpoint_id
        with self._locks.endpoint(nid, eid):
            net = self._require_network(nid)
            ep = self._require_endpoint(nid, eid)
            kind = self._kind(net)
            if not kind.publishes(net):
                return
            families = {ipaddress.ip_interface(a).version for a in ep.addresses}
            requests = resolve_host_ips(req.ports, net.options.host_binding_ipv4, families)
            if tuple(b.request for b in ep.published) == requests:
                return
            if ep.published:
                ep = replace(ep, published=())
                self.ledger.save_endpoint(ep)
                kind.unpublish(net, ep)
            with ExitStack() as undo:
                bindings = kind.publish(net, ep, requests)
                undo.callback(kind.unpublish, net, ep)
                self.ledger.save_endpoint(replace(ep, published=bindings))
                undo.pop_all()
        for b in bindings:
            log.info("endpoint %s: published %s", eid[:12], b.describe())

    def revoke_external(self, req: EndpointCall) -> None:
        """Unpublish the endpoint's ports (before Leave). Absent is fine."""
        nid, eid = req.network_id, req.endpoint_id
        with self._locks.endpoint(nid, eid):
            net, ep = self.ledger.network(nid), self.ledger.endpoint(nid, eid)
            if net is None or ep is None or not ep.published:
                return
            # Record first: ports a crash leaves installed are dropped by the next sync.
            self.ledger.save_endpoint(replace(ep, published=()))
            self._kind(net).unpublish(net, ep)
