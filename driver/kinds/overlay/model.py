"""What the store holds about overlays, and the rules a definition must keep (pure).

An overlay is identified by (address space, IPv4 subnet): the same `--subnet` given on
several hosts is one overlay, whatever NetworkID each host's dockerd made up. Its definition
(VNI, MTU, UDP port) is written once, by the first host, and every other host must agree.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pynet_core.errors import BadRequest, Conflict
from pynet_core.record_fields import Fields, shown, typed

from driver import naming
from driver.wireguard.api import Endpoint as WgEndpoint
from driver.wireguard.api import PublicKey

# Docker's overlay manager hands out VNIs from here; below is left to -o vni=.
FIRST_AUTO_VNI = 4096
# VNIs of Swarm networks start far above: every swarm node also runs Docker's own overlay
# (the `ingress` network has VNI 4096, its next networks 4097...), and the kernel refuses a
# second VXLAN device with a VNI already on the host's UDP port.
FIRST_SWARM_VNI = 1 << 20
VNI_MAX = 16777215
# An IPv4 underlay carries each frame in outer IP (20) + UDP (8) + VXLAN (8) headers, and
# the inner Ethernet header (14) counts against the underlay MTU too.
VXLAN_OVERHEAD = 50
# An encrypted overlay's VXLAN packets travel inside WireGuard over IPv4: outer IP 20 + UDP 8
# + WireGuard's header 16 and tag 16 (driver/wireguard/api.py OVERHEAD_IPV4).
WIREGUARD_OVERHEAD = 60
DEFAULT_PORT = 4789
LOCAL_SPACE = "LocalDefault"
# The MTU a definition may carry: from IPv4's minimum to what a 64 KiB underlay carries.
MTU_MIN, MTU_MAX = 68, 65535 - VXLAN_OVERHEAD
# Docker's IDs: 64 hex characters outside Swarm, 25 alphanumerics for Swarm's networks.
_ID = re.compile(r"[A-Za-z0-9]{1,64}", re.ASCII)
# What a host id may be in a record: one key level, printable, no path characters.
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,252}", re.ASCII)
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", re.ASCII)
_ATTEMPT = re.compile(r"[0-9a-f]{0,64}", re.ASCII)


class InvalidRecord(ValueError):
    """A record read from the store that is not what pynet writes: `reason` says what and
    which value. Raised by the from_dict parsers, once, at the edge of the model: what gets
    past them is well formed. The registry, which knows the key, skips the record
    (pynet_core/store/bad_records.py) or, where a call needs it, raises pynet_core.errors.BadRecord."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The field checks (pynet_core/record_fields.py), worded as the overlay's records always were.
FIELDS = Fields(missing=lambda name: InvalidRecord(f"'{name}' is missing"), error=InvalidRecord,
                got=typed, show=shown, sep="")
_field = FIELDS.field


def record_object(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRecord(f"not a JSON object (got {typed(data)})")
    return data


def _text(data: Mapping[str, Any], name: str, pattern: re.Pattern | None = None) -> str:
    return FIELDS.text(data, name, pattern=pattern)


def _attempt(data: Mapping[str, Any]) -> str:
    return FIELDS.matching(data.get("attempt", ""), "attempt", _ATTEMPT, "a write id")


def ipv4(value: Any, name: str) -> ipaddress.IPv4Address:
    """A dotted-quad IPv4 address (no IPv6, no integers, no leading zeros)."""
    return FIELDS.parsed(value, name, ipaddress.IPv4Address, "an IPv4 address")


def vtep_address(value: Any, name: str = "vtep") -> str:
    """A VTEP another host can send VXLAN to: a unicast IPv4 address (the underlay is IPv4
    only), not loopback, unspecified, multicast, broadcast, link-local or reserved."""
    ip = ipv4(value, name)
    for bad, what in ((ip.is_loopback, "loopback"), (ip.is_unspecified, "unspecified"),
                      (ip.is_multicast, "multicast"), (ip == ipaddress.IPv4Address("255.255.255.255"), "broadcast"),
                      (ip.is_link_local, "link-local"), (ip.is_reserved, "reserved")):
        if bad:
            raise InvalidRecord(f"'{name}' {ip} is a {what} address, not one another host can reach")
    return str(ip)


def unicast_mac(value: Any, name: str = "mac") -> str:
    """A well-formed unicast MAC, not all zeros (lower case)."""
    mac = FIELDS.string(value, name).lower()
    if not _MAC.fullmatch(mac):
        raise FIELDS.wrong_value(name, value, "a MAC address (xx:xx:xx:xx:xx:xx)")
    if int(mac[:2], 16) & 1:
        raise InvalidRecord(f"'{name}' {mac} is a multicast MAC")
    if mac == "00:00:00:00:00:00":
        raise InvalidRecord(f"'{name}' {mac} is the zero MAC")
    return mac


def host_id(value: Any, name: str = "host") -> str:
    return FIELDS.matching(value, name, _HOST, "a host id")


@dataclass(frozen=True, slots=True, order=True)
class OverlayId:
    space: str
    subnet: str  # IPv4 CIDR

    def __str__(self) -> str:
        return f"{self.subnet} ({self.space})"


@dataclass(frozen=True, slots=True)
class Definition:
    vni: int
    mtu: int
    port: int
    attempt: str = ""  # the write id of the host that defined it (fenced writes)
    # Carried between hosts inside WireGuard (-o encrypted). Part of the definition: every
    # host of an overlay must agree, or one of them would send its frames in clear.
    encrypted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Definition":
        """Strict: InvalidRecord unless it is what pynet writes (VNI 1..16777215, MTU, port,
        `encrypted` a boolean; absent in definitions written before it existed: false)."""
        data = record_object(data)
        return cls(FIELDS.integer(data, "vni", 1, VNI_MAX), FIELDS.integer(data, "mtu", MTU_MIN, MTU_MAX),
                   FIELDS.integer(data, "port", 1, 65535), _attempt(data),
                   FIELDS.flag(data, "encrypted", False))


@dataclass(frozen=True, slots=True)
class Member:
    """A host that has the overlay: its local network, where its kernel objects are, its VTEP."""
    host: str
    network: str
    vtep: str
    netns: str
    vxlan: str
    attempt: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Member":
        """Strict: InvalidRecord unless well formed, its VTEP one another host can reach and its
        kernel names the ones pynet gives its network."""
        data = record_object(data)
        network = _text(data, "network", _ID)
        netns, vxlan = _text(data, "netns"), _text(data, "vxlan")
        if netns != naming.overlay_netns(network):
            raise InvalidRecord(f"'netns' {shown(netns)} is not network {network[:12]}'s namespace name")
        if vxlan != naming.vxlan(network):
            raise InvalidRecord(f"'vxlan' {shown(vxlan)} is not network {network[:12]}'s VXLAN device name")
        return cls(host_id(_field(data, "host")), network, vtep_address(_field(data, "vtep")),
                   netns, vxlan, _attempt(data))


@dataclass(frozen=True, slots=True)
class Peer:
    """An endpoint on the overlay: frames for `mac`, and ARP for `ip`, go to `vtep`."""
    host: str
    endpoint: str
    network: str
    ip: str
    mac: str
    vtep: str
    attempt: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Peer":
        """Strict: InvalidRecord unless well formed (an IPv4 address, a unicast MAC, a reachable
        VTEP). Whether the address is the overlay's and the host's: admission.py."""
        data = record_object(data)
        return cls(host_id(_field(data, "host")), _text(data, "endpoint", _ID), _text(data, "network", _ID),
                   str(ipv4(_field(data, "ip"), "ip")), unicast_mac(_field(data, "mac")),
                   vtep_address(_field(data, "vtep")), _attempt(data))


@dataclass(frozen=True, slots=True)
class VniClaim:
    """Who holds a VNI cluster-wide: an overlay (its first host's join), or a Swarm network
    (AllocateNetwork, `network` set)."""
    space: str | None
    subnet: str | None
    network: str | None = None
    attempt: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> "VniClaim":
        data = record_object(data)
        space, subnet, network = data.get("space"), data.get("subnet"), data.get("network")
        for name, value in (("space", space), ("subnet", subnet), ("network", network)):
            if value is not None:
                FIELDS.string(value, name)
        if network is None and (space is None or subnet is None):
            raise InvalidRecord("it names neither an overlay (space and subnet) nor a Swarm network")
        return cls(space, subnet, network, _attempt(data))

    def holds(self, oid: "OverlayId") -> bool:
        """The overlay's own claim (a Swarm network's never: FreeNetwork alone frees it)."""
        return self.network is None and (self.space, self.subnet) == (oid.space, oid.subnet)


@dataclass(frozen=True, slots=True)
class WireGuardHost:
    """A host's part in encrypted overlays (v1/overlay/hosts/<host>/wireguard, written by that
    host alone): its WireGuard public key, where its WireGuard link listens (its VTEP address
    and --wireguard-port), and its tunnel address (claimed under v1/overlay/tunnels/<ip>). The
    private key never leaves the host's state directory."""
    host: str
    public_key: str      # canonical base64 (PublicKey.parse)
    endpoint: str        # "ip:port", a unicast IPv4 address another host can reach
    address: str         # the host's tunnel address (IPv4, one /32)
    attempt: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> PublicKey:
        return PublicKey.parse(self.public_key)

    @classmethod
    def from_dict(cls, data: Any) -> "WireGuardHost":
        """Strict: InvalidRecord unless the key is a canonical 32-byte WireGuard public key, the
        endpoint an IPv4 `ip:port` another host can reach, and the address a tunnel address
        (unicast IPv4). Whether the address is the host's claim: tunnels.py."""
        data = record_object(data)
        try:
            key = PublicKey.parse(_field(data, "public_key"), "'public_key'")
        except BadRequest as exc:
            raise InvalidRecord(exc.message) from None
        raw_endpoint = FIELDS.string(_field(data, "endpoint"), "endpoint")
        try:
            endpoint = WgEndpoint.parse(raw_endpoint)
        except BadRequest as exc:
            raise InvalidRecord(f"'endpoint' {shown(raw_endpoint)}: {exc.message}") from None
        if endpoint.ip.version != 4:
            raise InvalidRecord(f"'endpoint' {shown(raw_endpoint)} is not IPv4 (the underlay is IPv4 only)")
        vtep_address(str(endpoint.ip), "endpoint")
        address = tunnel_address(_field(data, "address"))
        return cls(host_id(_field(data, "host")), key.base64, str(endpoint), address, _attempt(data))


def tunnel_address(value: Any, name: str = "address") -> str:
    """A WireGuard tunnel address: a unicast IPv4 address (not loopback, multicast, ...)."""
    return vtep_address(value, name)


@dataclass(frozen=True, slots=True)
class TunnelClaim:
    """Who holds a tunnel address cluster-wide (v1/overlay/tunnels/<ip>, create-if-absent)."""
    address: str
    host: str
    attempt: str = ""

    @classmethod
    def from_dict(cls, address: str, data: Any) -> "TunnelClaim":
        data = record_object(data)
        return cls(tunnel_address(address, "key's address"), host_id(_field(data, "host")), _attempt(data))


def heartbeat(data: Any, host: str) -> None:
    """A heartbeat record: an object naming `host` (only its version is used)."""
    data = record_object(data)
    if _field(data, "host") != host:
        raise InvalidRecord(f"'host' {shown(data['host'])} is not {host!r}, whose heartbeat key it is")


@dataclass(frozen=True, slots=True)
class OverlayView:
    """One overlay as the store has it."""
    id: OverlayId
    definition: Definition | None
    members: dict[str, Member]
    peers: tuple[Peer, ...]
    # Hosts with a member record of the old key layout only (not read, but they hold the
    # overlay: its definition stays while they may still use it).
    legacy_members: frozenset[str] = frozenset()
    # The version of each member and peer record read (key -> version), and the records of
    # this overlay that failed validation (key -> reason): skipped, but the key exists.
    versions: Mapping[str, int] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)
    # Hosts whose member record exists but failed validation.
    unreadable_members: frozenset[str] = frozenset()

    def holders(self) -> frozenset[str]:
        """Every host that may still use the overlay's definition: one with a member record,
        readable or not, in either key layout. A definition is dropped only when none is."""
        return frozenset(self.members) | self.unreadable_members | self.legacy_members


def overlay_of(subnets: Iterable[str], space: str | None) -> OverlayId | None:
    """The overlay a network of these subnets in this address space is (its one IPv4
    subnet); None without one."""
    v4 = [s for s in subnets if ipaddress.ip_network(s, strict=False).version == 4]
    return OverlayId(space or LOCAL_SPACE, v4[0]) if v4 else None


def max_mtu(underlay_mtu: int, encrypted: bool = False) -> int:
    """The largest MTU of an overlay's links: the underlay's minus VXLAN's 50 bytes, and
    minus WireGuard's 60 more when the overlay is encrypted."""
    return underlay_mtu - VXLAN_OVERHEAD - (WIREGUARD_OVERHEAD if encrypted else 0)


def link_mtu(underlay_mtu: int, requested: int | None, underlay: str, encrypted: bool = False) -> int:
    """The MTU of the overlay's links: the underlay's minus VXLAN's headers (and WireGuard's,
    encrypted), or `requested` if it fits under that. Refused above, with the arithmetic."""
    limit = max_mtu(underlay_mtu, encrypted)
    if requested is None:
        return limit
    if requested > limit:
        if encrypted:
            raise BadRequest(f"MTU {requested} is too large for this encrypted overlay: its frames "
                             f"travel in VXLAN inside WireGuard over {underlay} (MTU {underlay_mtu}), "
                             f"so at most {underlay_mtu} - {VXLAN_OVERHEAD} (VXLAN) - "
                             f"{WIREGUARD_OVERHEAD} (WireGuard over IPv4) = {limit} fits")
        raise BadRequest(f"MTU {requested} is too large for this overlay: its frames travel in "
                         f"VXLAN over {underlay} (MTU {underlay_mtu}), whose headers take "
                         f"{VXLAN_OVERHEAD} bytes, so at most {limit} fits")
    return requested


def agreed(current: Definition, members: Iterable[str], oid: OverlayId, *, vni: int | None,
           mtu: int | None, mtu_limit: int, port: int, encrypted: bool = False) -> Definition:
    """The definition a host joining an existing overlay takes, or Conflict naming the hosts
    that hold the other one. Unset options follow the definition (but `encrypted` is never
    unset: an overlay made without -o encrypted is unencrypted); the MTU must also fit this
    host's underlay."""
    holders = ", ".join(sorted(members)) or "no host (yet)"
    held = f"overlay {oid} is defined {'encrypted' if current.encrypted else 'unencrypted'}, " \
           f"with VNI {current.vni}, MTU {current.mtu} and UDP port {current.port} by {holders}"
    if encrypted != current.encrypted:
        raise Conflict(f"{held}; this network is " + ("encrypted (-o encrypted)" if encrypted else
                       "unencrypted (no -o encrypted)") + ": every host of an overlay must give "
                       "the same -o encrypted, or one would carry its frames in clear")
    if vni is not None and vni != current.vni:
        raise Conflict(f"{held}; this network asks for VNI {vni}: use the same -o vni, or none")
    if mtu is not None and mtu != current.mtu:
        raise Conflict(f"{held}; this network asks for MTU {mtu}: use the same -o mtu, or none")
    if port != current.port:
        raise Conflict(f"{held}; this host sends VXLAN on UDP port {port}: every host of an "
                       "overlay must use the same --vxlan-port")
    if current.mtu > mtu_limit:
        raise Conflict(f"{held}; this host's underlay allows at most MTU {mtu_limit}, so it "
                       "cannot carry the overlay's frames")
    return current


def lowest_free_vni(taken: Iterable[int], first: int = FIRST_AUTO_VNI) -> int:
    """The lowest VNI from `first` up that is not taken."""
    used = set(taken)
    vni = first
    while vni in used:
        vni += 1
    if vni > VNI_MAX:
        raise Conflict(f"no VXLAN network identifier is free between {first} and {VNI_MAX}")
    return vni
