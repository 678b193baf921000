"""What pynet records about networks and endpoints (pure data, JSON round-trip).

Records are read from a store other clients can write, so from_dict checks every field
once, here, at the edge of the model: a wrong type, a bad address, MAC or CIDR raises
ValueError naming the field, and decode() turns it into BadRecord naming the key.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pynet_core.errors import BadRecord
from pynet_core.record_fields import Fields, type_name

from .netlink.api import FoundLink
from .options import NetworkOptions
from .portmap import PortBinding

DEFAULT_MTU = 1500

# A record's state. "creating" is written before any kernel work (the intent: restore knows
# exactly what pynet may have made), "ready" once it is all made, "deleting" before the
# kernel objects go. Restore finishes what a crash interrupted: a record that is not ready
# has its kernel objects removed and goes.
CREATING, READY, DELETING = "creating", "ready", "deleting"
STATES = (CREATING, READY, DELETING)

_ID = re.compile(r"[A-Za-z0-9]{1,128}", re.ASCII)
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", re.ASCII)
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "type": (str,), "mtu": (int, type(None)), "iface_prefix": (str,),
    "bridge_name": (str, type(None)), "parent": (str, type(None)),
    "macvlan_mode": (str, type(None)), "internal": (bool,), "ipv6": (bool,),
    "masquerade": (bool,), "icc": (bool,), "host_binding_ipv4": (str, type(None)),
    "vni": (int, type(None)), "encrypted": (bool,),
}


# --- field checks: each raises ValueError naming the field (pynet_core/record_fields.py) --
FIELDS = Fields(missing=lambda name: ValueError(f"missing field {name!r}"))
_text, _flag, _number = FIELDS.text, FIELDS.flag, FIELDS.number


def _object(value: Any, name: str) -> dict:
    return FIELDS.object(value, name, got=type_name)


def _found_link(data: dict) -> FoundLink | None:
    value = data.get("found_bridge")
    return None if value is None else FoundLink.from_dict(value)


def _id(data: dict, name: str) -> str:
    value = _text(data, name)
    if not _ID.fullmatch(value):
        raise FIELDS.wrong_type(name, "be an ID of letters and digits", value)
    return value


def _state(data: dict) -> str:
    value = _text(data, "state", READY)
    if value not in STATES:
        raise FIELDS.wrong_type("state", f"be one of {', '.join(STATES)}", value)
    return value


def _list(data: dict, name: str, check) -> tuple:
    return FIELDS.listed(data, name, check, got=type_name)


def _interface(text: Any, name: str) -> str:
    FIELDS.parsed(text, name, ipaddress.ip_interface, "an address with a prefix length",
                  expected="hold addresses as strings")
    return text


def _subnet(text: Any, name: str) -> str:
    FIELDS.parsed(text, name, ipaddress.ip_network, "a subnet (CIDR)",
                  expected="hold subnets as strings")
    return text


def _address(data: dict, name: str) -> str | None:
    value = _text(data, name, None, optional=True)
    if value is not None:
        FIELDS.parsed(value, name, ipaddress.ip_address, "an IP address")
    return value


def _options(value: Any) -> NetworkOptions:
    data = _object(value, "options")
    FIELDS.of_types(data, _OPTION_TYPES, "option")
    return NetworkOptions.from_dict(data)


def _binding(value: Any, name: str) -> PortBinding:
    data = _object(value, name)
    proto = _text(data, "proto")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"{name!r}: protocol {proto!r:.20} is not tcp or udp")
    ports = {f: _number(data, f, 0, 65535) for f in
             ("container_port", "host_port", "host_port_start", "host_port_end")}
    if any(p is None for p in ports.values()):
        raise ValueError(f"{name!r}: every port must be given")
    for ip in ("container_ip", "host_ip"):
        if _address(data, ip) is None:
            raise ValueError(f"{name!r}: {ip!r} must be given")
    return PortBinding(proto=proto, container_ip=data["container_ip"], host_ip=data["host_ip"],
                       **ports)  # type: ignore[arg-type]


def decode(cls, key: str, data: Any):
    """cls.from_dict(data) for the record at key, or BadRecord naming the key and the reason."""
    if not isinstance(data, dict):
        raise BadRecord(key, f"expected a JSON object, got {type(data).__name__}")
    try:
        return cls.from_dict(data)
    except ValueError as exc:
        raise BadRecord(key, str(exc)) from None


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    id: str
    options: NetworkOptions
    # The network's Linux bridge, if its kind uses one (chosen by the kind), and whether
    # pynet made it: a pre-existing one named by the user is left in place.
    bridge: str | None = None
    bridge_created: bool = False
    # A bridge pynet found (the user's), as it was before pynet changed anything: what
    # DeleteNetwork puts back (read and written as the intent, before any kernel work).
    found_bridge: FoundLink | None = None
    # Gateway interfaces as CIDR ("10.1.0.1/24") and the subnets, from Docker's IPAM data.
    gateways: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    # macvlan: the link the endpoints' macvlans sit on (the parent, its 802.1q sub-interface,
    # or a bridge made for a network without parent), and whether pynet made that link.
    lower: str | None = None
    lower_created: bool = False
    state: str = READY
    # A random id per CreateNetwork attempt: what a late-landing write of a failed attempt
    # is recognised by (pynet_core/store/fenced.py).
    attempt: str = ""
    # The IPv4 pool's address space (Docker's IPAM data): an overlay is one (space, subnet).
    address_space: str = ""
    # overlay: the network's own namespace (its bridge and VXLAN device live there), the
    # VNI, the local VTEP address, and the MTU its links get (the underlay's minus VXLAN's).
    netns: str | None = None
    vni: int | None = None
    vtep: str | None = None
    link_mtu: int | None = None

    @property
    def kind(self) -> str:
        """The network's type (`-o type=`), by the name the code gives it: the kind that serves
        it (driver/kinds/), as EndpointRecord.kind names the kind that made an endpoint."""
        return self.options.type

    @property
    def mtu(self) -> int:
        return self.link_mtu or self.options.mtu or DEFAULT_MTU

    def to_dict(self) -> dict:
        data = asdict(self)
        data["options"] = self.options.to_dict()
        data["found_bridge"] = self.found_bridge.to_dict() if self.found_bridge else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkRecord":
        """The record, every field checked (ValueError naming the first that is wrong)."""
        if "options" not in data:
            raise ValueError("missing field 'options'")
        return cls(
            id=_id(data, "id"), options=_options(data["options"]),
            bridge=_text(data, "bridge", None, optional=True),
            bridge_created=_flag(data, "bridge_created", False),
            found_bridge=_found_link(data),
            gateways=_list(data, "gateways", _interface), subnets=_list(data, "subnets", _subnet),
            lower=_text(data, "lower", None, optional=True),
            lower_created=_flag(data, "lower_created", False),
            state=_state(data), attempt=_text(data, "attempt", ""),
            address_space=_text(data, "address_space", ""),
            netns=_text(data, "netns", None, optional=True),
            vni=_number(data, "vni", 1, 16777215), vtep=_address(data, "vtep"),
            link_mtu=_number(data, "link_mtu", 68, 65535),
        )


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    network_id: str
    id: str
    # The host end of the endpoint's veth (bridge kind); None for a kind with no host end.
    host_if: str | None
    # The link Docker moves into the container at Join.
    peer_if: str
    addresses: tuple[str, ...]
    mac: str
    sandbox: str | None = None
    # Endpoint options Docker passed (exposed ports, port map...), kept for later use.
    options: dict = field(default_factory=dict)
    # Ports published by ProgramExternalConnectivity, with the host ports chosen: a
    # restarted plugin re-installs exactly these.
    published: tuple[PortBinding, ...] = ()
    # The network type that made the endpoint: its links are removed by that kind even
    # when the network's record went first.
    kind: str = "bridge"
    state: str = READY
    attempt: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self), "published": [b.to_dict() for b in self.published]}

    def links(self) -> tuple[str, ...]:
        """The links the endpoint's kind makes for it (host end first)."""
        return tuple(name for name in (self.host_if, self.peer_if) if name)

    @classmethod
    def from_dict(cls, data: dict) -> "EndpointRecord":
        """The record, every field checked (ValueError naming the first that is wrong)."""
        if "addresses" not in data:
            raise ValueError("missing field 'addresses'")
        mac = _text(data, "mac")
        if not _MAC.fullmatch(mac):
            raise ValueError(f"'mac' {mac!r:.40} is not a MAC address (xx:xx:xx:xx:xx:xx)")
        return cls(
            network_id=_id(data, "network_id"), id=_id(data, "id"),
            host_if=_text(data, "host_if", None, optional=True), peer_if=_text(data, "peer_if"),
            addresses=_list(data, "addresses", _interface), mac=mac,
            sandbox=_text(data, "sandbox", None, optional=True),
            options=dict(_object(data.get("options", {}), "options")),
            published=_list(data, "published", _binding),
            kind=_text(data, "kind", "bridge"), state=_state(data),
            attempt=_text(data, "attempt", ""),
        )
