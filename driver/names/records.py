"""Name records in the store: what one host says of its own containers' names (pure).

One record per endpoint of a container on a pynet network, under the host's own prefix
(`v1/names/hosts/<host>/<endpoint id>`, pynet_core/store/keys.py), so a Consul ACL per host
limits each host to its own names (docs/consul-policy-host.hcl). Every host reads every
host's records; each is parsed strictly here, once, at the edge (as the overlay's records
are: driver/kinds/overlay/model.py), and one that fails is skipped, logged once per key and
version, and counted (pynet_core/store/bad_records.py); the rest stand.

The network a record names is its cross-host identity, not a dockerd's network id (each
host's dockerd makes up its own id for one overlay):
- an overlay is (address space, IPv4 subnet), as the overlay's own records identify it
  (`overlay/<space>/<subnet>`): containers on that overlay on every host share it;
- any other network (bridge, macvlan) is one host's: `local/<host>/<network id>`, and only
  the host whose record it is may name it, so its names never reach another host's askers.
"""
from __future__ import annotations

import ipaddress
import re
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from pynet_core.record_fields import MAX_RECORD_DEPTH, Fields, nested_deeper_than, shown, typed
from pynet_core.store.keys import parse_name_key
from pynet_core.store.segments import segment_problem

from .table import MAX_NAME, NameRecord, normal

OVERLAY, LOCAL = "overlay", "local"
MAX_ALIASES = 32           # names of one container on one network besides its own
MAX_VALUE = 16 * 1024      # a record is a few hundred bytes; a huge one is not pynet's
_ID = re.compile(r"[A-Za-z0-9]{1,64}", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,252}", re.ASCII)


class InvalidNames(ValueError):
    """A name record that is not what pynet writes; `reason` says what and which value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


FIELDS = Fields(missing=lambda name: InvalidNames(f"'{name}' is missing"), error=InvalidNames,
                got=typed, show=shown, sep="")


# --- network identity ----------------------------------------------------------------------
def overlay_network(space: str, subnet: str) -> str:
    return f"{OVERLAY}/{space}/{subnet}"


def local_network(host: str, nid: str) -> str:
    return f"{LOCAL}/{host}/{nid}"


@dataclass(frozen=True, slots=True)
class NetworkIdentity:
    """Which network a name is on, the same text on every host that shares it."""
    kind: str                 # OVERLAY or LOCAL
    space: str = ""           # overlay: the address space
    subnet: str = ""          # overlay: the IPv4 subnet (CIDR)
    id: str = ""              # local: the host's network id

    def key(self, host: str) -> str:
        """The identity as one text (`host`: the record's host, for a local network)."""
        return overlay_network(self.space, self.subnet) if self.kind == OVERLAY \
            else local_network(host, self.id)

    def to_dict(self) -> dict:
        if self.kind == OVERLAY:
            return {"kind": OVERLAY, "space": self.space, "subnet": self.subnet}
        return {"kind": LOCAL, "id": self.id}

    @classmethod
    def from_dict(cls, value: Any) -> "NetworkIdentity":
        data = FIELDS.object(value, "network")
        kind = FIELDS.field(data, "kind")
        if kind == OVERLAY:
            space = FIELDS.text(data, "space")
            problem = segment_problem(space)
            if problem is not None:
                raise InvalidNames(f"'space' {shown(space)} is not an address space: {problem}")
            subnet = _ipv4_subnet(FIELDS.field(data, "subnet"))
            return cls(OVERLAY, space=space, subnet=str(subnet))
        if kind == LOCAL:
            return cls(LOCAL, id=FIELDS.matching(FIELDS.field(data, "id"), "id", _ID, "a network id"))
        raise FIELDS.wrong_value("kind", kind, f"{OVERLAY!r} or {LOCAL!r}")


def _ipv4_subnet(value: Any) -> ipaddress.IPv4Network:
    text = FIELDS.string(value, "subnet")
    try:
        net = ipaddress.IPv4Network(text)  # strict: host bits set is not what pynet writes
    except ValueError:
        raise FIELDS.wrong_value("subnet", value, "an IPv4 subnet") from None
    if net.prefixlen > 30:
        raise InvalidNames(f"'subnet' {net} has no room for containers")
    return net


# --- the record ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NameEntry:
    """What a host stores of one of its containers' endpoints on a pynet network."""
    host: str
    endpoint: str
    container: str
    name: str
    network: NetworkIdentity
    network_name: str = ""
    aliases: tuple[str, ...] = ()
    ipv4: Optional[str] = None
    ipv6: Optional[str] = None

    def to_dict(self) -> dict:
        return {"host": self.host, "endpoint": self.endpoint, "container": self.container,
                "name": self.name, "network": self.network.to_dict(),
                "network_name": self.network_name, "aliases": list(self.aliases),
                "ipv4": self.ipv4, "ipv6": self.ipv6}

    def record(self) -> NameRecord:
        """The table's view of it (addresses as address objects)."""
        return NameRecord(container=self.container, name=self.name,
                          network=self.network.key(self.host), network_name=self.network_name,
                          host=self.host, aliases=self.aliases,
                          ipv4=ipaddress.IPv4Address(self.ipv4) if self.ipv4 else None,
                          ipv6=ipaddress.IPv6Address(self.ipv6) if self.ipv6 else None)

    @classmethod
    def from_dict(cls, data: Any) -> "NameEntry":
        """Strict: InvalidNames unless it is what pynet writes."""
        if not isinstance(data, dict):
            raise InvalidNames(f"not a JSON object (got {typed(data)})")
        host = FIELDS.matching(FIELDS.field(data, "host"), "host", _HOST, "a host id")
        endpoint = FIELDS.matching(FIELDS.field(data, "endpoint"), "endpoint", _ID, "an endpoint id")
        container = FIELDS.matching(FIELDS.field(data, "container"), "container", _ID,
                                    "a container id")
        name = dns_name(FIELDS.field(data, "name"), "name")
        network = NetworkIdentity.from_dict(FIELDS.field(data, "network"))
        network_name = FIELDS.string(FIELDS.field(data, "network_name", ""), "network_name")
        if network_name and normal(network_name) is None:
            raise FIELDS.wrong_value("network_name", network_name, "a DNS name")
        aliases = FIELDS.field(data, "aliases", [])
        if not isinstance(aliases, list):
            raise FIELDS.wrong_type("aliases", "be a list", aliases)
        if len(aliases) > MAX_ALIASES:
            raise InvalidNames(f"'aliases' holds {len(aliases)} names, at most {MAX_ALIASES}")
        aliases = tuple(dict.fromkeys(dns_name(a, "aliases") for a in aliases))
        ipv4 = _address(data, "ipv4", 4, network)
        ipv6 = _address(data, "ipv6", 6, network)
        if ipv4 is None and ipv6 is None:
            raise InvalidNames("it has neither an 'ipv4' nor an 'ipv6' address")
        return cls(host, endpoint, container, name, network, network_name, aliases, ipv4, ipv6)


def dns_name(value: Any, field: str) -> str:
    """A container name or alias pynet can answer: a DNS name of at most 253 characters."""
    text = FIELDS.string(value, field)
    if len(text) > MAX_NAME or normal(text) is None or text.endswith("."):
        raise FIELDS.wrong_value(field, value, "a DNS name")
    return text


def _address(data: Mapping[str, Any], field: str, version: int,
             network: NetworkIdentity) -> Optional[str]:
    value = data.get(field)
    if value is None:
        return None
    kind = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    ip = FIELDS.parsed(value, field, kind, f"an IPv{version} address")
    if version == 6 and ip.scope_id:
        raise InvalidNames(f"'{field}' {shown(value)} has a zone, not a container's address")
    for bad, what in ((ip.is_unspecified, "unspecified"), (ip.is_loopback, "loopback"),
                      (ip.is_multicast, "multicast"), (ip.is_link_local, "link-local"),
                      (version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"), "broadcast")):
        if bad:
            raise InvalidNames(f"'{field}' {ip} is a {what} address, not a container's")
    if version == 6 and network.kind == OVERLAY:
        # pynet's overlays are IPv4 only (driver/kinds/overlay/kind.py): an IPv6 address there
        # is no container's, and no IPAM claim could vouch for it.
        raise InvalidNames(f"'{field}' {ip}: an overlay's containers have no IPv6 address")
    if version == 4 and network.kind == OVERLAY:
        subnet = ipaddress.IPv4Network(network.subnet)
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            raise InvalidNames(f"'{field}' {ip} is not a container address of overlay {subnet}")
    return str(ip)


def parse_record(key: str, value: str) -> NameEntry:
    """The record stored at `key` (under keys.names_hosts()), or InvalidNames saying why:
    a key of another shape, a value too long, not UTF-8 or not JSON, a field that is not
    what pynet writes, or a record that speaks for another host or endpoint than its key."""
    parsed = parse_name_key(key)
    if parsed is None:
        raise InvalidNames("pynet writes no name key of this shape")
    host, eid = parsed
    if len(value) > MAX_VALUE:
        raise InvalidNames(f"its value is {len(value)} characters long, at most {MAX_VALUE}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNames("its value is not UTF-8 text") from None
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise InvalidNames(f"its value is not JSON ({exc})") from None
    except RecursionError:
        data, deep = None, True
    else:
        deep = nested_deeper_than(data)
    if deep:
        raise InvalidNames(f"its value is JSON nested too deeply (more than {MAX_RECORD_DEPTH} levels)")
    named = NameEntry.from_dict(data)
    if named.host != host:
        raise InvalidNames(f"it names host {named.host!r}, but sits under host {host!r}'s prefix")
    if named.endpoint != eid:
        raise InvalidNames(f"'endpoint' {named.endpoint[:12]} is not the one its key names")
    return named


def dump(named: NameEntry) -> str:
    return json.dumps(named.to_dict(), sort_keys=True, separators=(",", ":"))
