"""NetworkDriver calls: records in the store, kernel work delegated to the network's kind.

Every method is idempotent (Docker repeats calls after restarts and rolls back with
Delete/Leave after failures) and leaves nothing half made when it fails.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import replace

from . import naming
from pynet.errors import BadRequest, Conflict, NotFound
from .kinds.base import NetworkKind
from .models import EndpointRecord, NetworkRecord
from .options import parse_network_options
from .portmap import parse_portmap
from pynet.store import keys, records
from pynet.store.api import Store

log = logging.getLogger(__name__)

CAPABILITIES = {"Scope": "local", "ConnectivityScope": "global"}


class NetworkService:
    def __init__(self, store: Store, host: str, kinds: dict[str, NetworkKind]) -> None:
        self.store = store
        self.host = host
        self.kinds = kinds
        # Calls on one network are serialised in-process; this only avoids wasted work,
        # correctness across processes and hosts comes from the store's CAS.
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

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

    # --- NetworkDriver.CreateNetwork / DeleteNetwork --------------------------------
    def create_network(self, nid: str, options: dict, ipv4: list[dict], ipv6: list[dict]) -> dict:
        opts = parse_network_options(options)
        gateways, subnets = _ipam_data(ipv4 + ipv6)
        with self._locks[nid]:
            if (existing := self.network(nid)) is not None:
                self.kinds[existing.options.type].restore_network(existing, self.endpoints(nid))
                return {}
            bridge = opts.bridge_name or naming.bridge(nid)
            for other in self.networks():
                if other.bridge == bridge:
                    raise Conflict(f"bridge name {bridge} is already used by pynet network "
                                   f"{other.id[:12]}")
            net = NetworkRecord(id=nid, options=opts, bridge=bridge,
                                bridge_created=opts.bridge_name is None,
                                gateways=gateways, subnets=subnets)
            with ExitStack() as undo:
                net = self.kinds[opts.type].create_network(net, undo)
                # Kernel first, record last: a crash in between leaves only a pn- link,
                # which restore removes as an orphan.
                if not self.store.create(keys.network(self.host, nid), records.dump(net.to_dict())):
                    raise Conflict(f"network {nid[:12]} was created concurrently")
                undo.pop_all()
        log.info("network %s: %s bridge %s %s", nid[:12], opts.type, bridge, ",".join(gateways))
        return {}

    def delete_network(self, nid: str) -> dict:
        with self._locks[nid]:
            net = self.network(nid)
            if net is None:
                return {}
            kind = self.kinds[net.options.type]
            # Record first: a crash after it leaves kernel objects that restore removes.
            stale = self.endpoints(nid)
            for ep in stale:
                self.store.delete(keys.endpoint(self.host, nid, ep.id))
            self.store.delete(keys.network(self.host, nid))
            for ep in stale:
                kind.delete_endpoint(net, ep)
            kind.delete_network(net)
        self._locks.pop(nid, None)
        return {}

    # --- NetworkDriver.CreateEndpoint / DeleteEndpoint ------------------------------
    def create_endpoint(self, nid: str, eid: str, interface: dict, options: dict) -> dict:
        address = interface.get("Address") or ""
        address6 = interface.get("AddressIPv6") or ""
        given_mac = interface.get("MacAddress") or ""
        for value, what in ((address, "Address"), (address6, "AddressIPv6")):
            if value:
                try:
                    ipaddress.ip_interface(value)
                except ValueError:
                    raise BadRequest(f"Interface.{what} {value!r} is not an address in CIDR "
                                     "form") from None
        with self._locks[nid]:
            net = self._require_network(nid)
            existing = self._endpoint(nid, eid)
            if existing is None:
                ep = EndpointRecord(
                    network_id=nid, id=eid, host_if=naming.host_veth(eid),
                    peer_if=naming.peer_veth(eid),
                    addresses=tuple(a for a in (address, address6) if a),
                    mac=given_mac or naming.mac_for(eid, address or None),
                    options=_keep_json(options),
                )
                with ExitStack() as undo:
                    # A kind may adjust the record (a passthru macvlan takes its parent's MAC).
                    ep = self.kinds[net.options.type].create_endpoint(net, ep, undo) or ep
                    self.store.create(keys.endpoint(self.host, nid, eid), records.dump(ep.to_dict()))
                    undo.pop_all()
            else:
                ep = existing
        # Only fields Docker left empty may be answered (else it rolls the endpoint back).
        return {} if given_mac else {"Interface": {"MacAddress": ep.mac}}

    def delete_endpoint(self, nid: str, eid: str) -> dict:
        with self._locks[nid]:
            ep = self._endpoint(nid, eid)
            if ep is None:
                return {}
            net = self.network(nid)
            self.store.delete(keys.endpoint(self.host, nid, eid))
            if net is not None:
                self.kinds[net.options.type].delete_endpoint(net, ep)
            else:
                # The network went first, so its kind is unknown: every kind removes the links
                # it would have made for this endpoint (absent ones are fine).
                for kind in {id(k): k for k in self.kinds.values()}.values():
                    kind.delete_endpoint(None, ep)
        return {}

    def endpoint_info(self, nid: str, eid: str) -> dict:
        ep = self._require_endpoint(nid, eid)
        return {"Value": {"interface": ep.peer_if, "mac": ep.mac}}

    # --- NetworkDriver.Join / Leave -------------------------------------------------
    def join(self, nid: str, eid: str, sandbox: str, options: dict) -> dict:
        with self._locks[nid]:
            net = self._require_network(nid)
            ep = self._require_endpoint(nid, eid)
            self.kinds[net.options.type].ensure_endpoint_ready(net, ep)
            if ep.sandbox != sandbox:
                _save(self.store, keys.endpoint(self.host, nid, eid), replace(ep, sandbox=sandbox))
        answer: dict = {"InterfaceName": {"SrcName": ep.peer_if,
                                          "DstPrefix": net.options.iface_prefix}}
        if net.options.type == "macvlan":
            # The gateway is a router on the parent's wire, or there is none (no parent):
            # never Docker's docker_gwbridge, which would give these containers a way out.
            answer["DisableGatewayService"] = True
        if not net.options.internal:
            for gateway in net.gateways:
                ip = ipaddress.ip_interface(gateway).ip
                answer["Gateway" if ip.version == 4 else "GatewayIPv6"] = str(ip)
        return answer

    def leave(self, nid: str, eid: str) -> dict:
        with self._locks[nid]:
            ep = self._endpoint(nid, eid)
            if ep is not None and ep.sandbox is not None:
                _save(self.store, keys.endpoint(self.host, nid, eid), replace(ep, sandbox=None))
        return {}

    # --- NetworkDriver.ProgramExternalConnectivity / RevokeExternalConnectivity -----
    def program_external(self, nid: str, eid: str, options: dict) -> dict:
        """Publish the ports in Options' com.docker.network.portmap (Docker calls this after
        Join, for the endpoint that gives the container its gateway). The chosen host ports
        are recorded so a restarted plugin re-installs them. Idempotent: the same ports
        again change nothing; other ports replace them. A port in use fails the call and
        leaves nothing behind. Networks that publish nothing (internal, or a kind without
        published ports) answer {}."""
        with self._locks[nid]:
            net = self._require_network(nid)
            ep = self._require_endpoint(nid, eid)
            kind = self.kinds[net.options.type]
            if net.options.internal or not hasattr(kind, "publish"):
                return {}
            requests = parse_portmap(options, net.options.host_binding_ipv4)
            if tuple(b.request for b in ep.published) == requests:
                return {}
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
        return {}

    def revoke_external(self, nid: str, eid: str) -> dict:
        """Unpublish the endpoint's ports (before Leave). Absent is fine."""
        with self._locks[nid]:
            net, ep = self.network(nid), self._endpoint(nid, eid)
            if net is None or ep is None or not ep.published:
                return {}
            # Record first: ports a crash leaves installed are dropped by the next sync.
            _save(self.store, keys.endpoint(self.host, nid, eid), replace(ep, published=()))
            self.kinds[net.options.type].unpublish(net, ep)
        return {}


def _save(store: Store, key: str, ep: EndpointRecord) -> None:
    records.update(store, key, lambda _current: ep.to_dict(), f"saving endpoint {ep.id[:12]}")


def _ipam_data(entries: list[dict]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Gateways (CIDR) and subnets from CreateNetwork's IPv4Data/IPv6Data."""
    gateways, subnets = [], []
    for data in entries:
        if not isinstance(data, dict):
            raise BadRequest(f"IPAM data entries must be objects, got {data!r}")
        pool = data.get("Pool") or ""
        gateway = data.get("Gateway") or ""
        try:
            net = ipaddress.ip_network(pool, strict=False) if pool else None
            gw = ipaddress.ip_interface(gateway) if gateway else None
        except ValueError as exc:
            raise BadRequest(f"IPAM data {data!r} is not valid: {exc}") from None
        if net is not None and net.prefixlen == 0:
            continue  # --ipam-driver null sends 0.0.0.0/0: there is no subnet to serve
        if net is not None:
            subnets.append(str(net))
        if gw is not None and gw.network.prefixlen > 0:
            gateways.append(str(gw))
    return tuple(gateways), tuple(subnets)


def _keep_json(options: dict) -> dict:
    # Endpoint options are kept for features that need them later (published ports).
    keep = ("com.docker.network.portmap", "com.docker.network.endpoint.exposedports")
    return {k: options[k] for k in keep if k in options}
