"""This host's names, from what dockerd lists and pynet's own records (pure).

Where names come from (issue 21 leaves it open; docs/dns.md "Where names come from"):
- **dockerd's container list** (`GET /containers/json`, the API pynet already reads for its
  leak checks): every running container's name (`Names`) and, per network, its NetworkID,
  EndpointID and addresses; and **one inspect per container and set of endpoints**
  (`GET /containers/<id>/json`) for what the list leaves out (moby's container view copies
  only ids and addresses): per network its `Aliases` (`--network-alias`, Compose's service
  name and aliases; before API 1.45 also the short id) and, from API 1.44 (Docker 25),
  `DNSNames` (every name Docker's own DNS answers for it). dockerd 20.10 to 29 alike
  (docker_names.py merges the two).
- **pynet's own endpoint record** (the ledger) for the addresses a name answers: what pynet
  itself gave the endpoint, not what another process says; an endpoint pynet has no ready
  record of is named at the next look, once it has one.
- **docker_gwbridge's container list** (`GET /networks/docker_gwbridge`, `Containers`, keyed
  by container id) for the asker mapping only: an overlay container reaches pynet's DNS
  address through its docker_gwbridge interface, so that is its source address.
Not Join (dockerd calls it while starting the container and sends no names; a plugin call
that asked dockerd back could wait on dockerd itself), and not the endpoint name Docker 29
sends in RequestAddress (Docker 29 only, no aliases, seen by the IPAM driver before the
container runs).

Who asks: every local address of a container that has a pynet network (its pynet
addresses, its docker_gwbridge and docker0 addresses, any other network's) maps to the
identities of all its pynet networks. An address two containers hold names no one.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from driver.kinds.overlay.model import overlay_of
from driver.models import READY, EndpointRecord, NetworkRecord

from .records import LOCAL, MAX_ALIASES, NameEntry, NetworkIdentity, OVERLAY
from .table import normal

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class Snapshot:
    """What this host should have stored (endpoint id -> its record) and who asks from
    which address (address -> identities of the asking container's pynet networks)."""
    entries: dict[str, NameEntry] = field(default_factory=dict)
    askers: dict[Address, frozenset[str]] = field(default_factory=dict)


def identity(net: NetworkRecord) -> NetworkIdentity | None:
    """The cross-host identity of one of this host's pynet networks."""
    if net.kind == OVERLAY:
        oid = overlay_of(net.subnets, net.address_space)
        if oid is None:
            return None
        return NetworkIdentity(OVERLAY, space=oid.space, subnet=oid.subnet)
    return NetworkIdentity(LOCAL, id=net.id)


def container_name(summary: Mapping[str, Any]) -> str | None:
    """The container's own name from a list entry's `Names` ("/web"; names of links look
    like "/other/web" and are not its own)."""
    names = summary.get("Names")
    if not isinstance(names, list):
        return None
    for name in names:
        if isinstance(name, str) and name.count("/") == 1 and name.startswith("/"):
            return name[1:]
    return None


def _address(text: Any) -> Address | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return ipaddress.ip_address(text.split("/")[0])
    except ValueError:
        return None


def _names(settings: Mapping[str, Any], own: str) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for key in ("Aliases", "DNSNames"):
        values = settings.get(key)
        if not isinstance(values, list):
            continue
        for value in values:
            if isinstance(value, str) and value != own and not value.endswith(".") \
                    and normal(value) is not None and len(found) < MAX_ALIASES:
                found.setdefault(value, None)
    return tuple(found)


def snapshot(host: str, containers: Iterable[Mapping[str, Any]],
             gateway_addresses: Mapping[str, Iterable[str]],
             networks: Iterable[NetworkRecord], endpoints: Iterable[EndpointRecord]) -> Snapshot:
    """This host's names and askers from dockerd's container list (`containers`), the
    docker_gwbridge addresses by container id, and pynet's own records. Anything dockerd
    lists that cannot be read is left out, never an error."""
    nets = {n.id: n for n in networks if n.state == READY}
    idents = {nid: i for nid, net in nets.items() if (i := identity(net)) is not None}
    eps = {(e.network_id, e.id): e for e in endpoints if e.state == READY}
    entries: dict[str, NameEntry] = {}
    holders: dict[Address, set[str]] = {}
    networks_of: dict[str, set[str]] = {}
    for summary in containers:
        if not isinstance(summary, Mapping):
            continue
        cid = summary.get("Id")
        name = container_name(summary)
        settings = (summary.get("NetworkSettings") or {})
        attached = settings.get("Networks") if isinstance(settings, Mapping) else None
        if not isinstance(cid, str) or not isinstance(attached, Mapping):
            continue
        mine: set[str] = set()
        local_addresses: set[Address] = set()
        for net_name, ep_settings in attached.items():
            if not isinstance(ep_settings, Mapping):
                continue
            for key in ("IPAddress", "GlobalIPv6Address"):
                address = _address(ep_settings.get(key))
                if address is not None:
                    local_addresses.add(address)
            nid, eid = ep_settings.get("NetworkID"), ep_settings.get("EndpointID")
            if nid not in idents or not isinstance(eid, str):
                continue
            ident = idents[nid]
            mine.add(ident.key(host))
            record = eps.get((nid, eid))
            if record is None:
                continue
            addresses = [ipaddress.ip_interface(a).ip for a in record.addresses]
            local_addresses.update(addresses)
            v4 = next((str(a) for a in addresses if a.version == 4), None)
            # (An overlay is IPv4 only: the records say so, records.py.)
            v6 = None if ident.kind == OVERLAY else \
                next((str(a) for a in addresses if a.version == 6), None)
            if name is None or normal(name) is None or (v4 is None and v6 is None):
                continue
            shown_net = net_name if isinstance(net_name, str) and normal(net_name) else ""
            entries[eid] = NameEntry(host, eid, cid, name, ident, shown_net,
                                     _names(ep_settings, name), v4, v6)
        for text in gateway_addresses.get(cid, ()):
            address = _address(text)
            if address is not None:
                local_addresses.add(address)
        if mine:
            networks_of[cid] = mine
        # Every container's addresses count, pynet's or not: one held twice names no one.
        for address in local_addresses:
            holders.setdefault(address, set()).add(cid)
    askers = {address: frozenset(networks_of[cid])
              for address, cids in holders.items() if len(cids) == 1
              for cid in cids if cid in networks_of}
    return Snapshot(entries, askers)
