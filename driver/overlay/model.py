"""What the store holds about overlays, and the rules a definition must keep (pure).

An overlay is identified by (address space, IPv4 subnet): the same `--subnet` given on
several hosts is one overlay, whatever NetworkID each host's dockerd made up. Its definition
(VNI, MTU, UDP port) is written once, by the first host, and every other host must agree.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from pynet.errors import BadRequest, Conflict

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
DEFAULT_PORT = 4789
LOCAL_SPACE = "LocalDefault"


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Definition":
        return cls(int(data["vni"]), int(data["mtu"]), int(data["port"]), data.get("attempt", ""))


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
    def from_dict(cls, data: dict) -> "Member":
        return cls(**{k: data[k] for k in ("host", "network", "vtep", "netns", "vxlan")},
                   attempt=data.get("attempt", ""))


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
    def from_dict(cls, data: dict) -> "Peer":
        return cls(**{k: data[k] for k in ("host", "endpoint", "network", "ip", "mac", "vtep")},
                   attempt=data.get("attempt", ""))


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


def max_mtu(underlay_mtu: int) -> int:
    return underlay_mtu - VXLAN_OVERHEAD


def link_mtu(underlay_mtu: int, requested: int | None, underlay: str) -> int:
    """The MTU of the overlay's links: the underlay's minus VXLAN's headers, or `requested`
    if it fits under that."""
    limit = max_mtu(underlay_mtu)
    if requested is None:
        return limit
    if requested > limit:
        raise BadRequest(f"MTU {requested} is too large for this overlay: its frames travel in "
                         f"VXLAN over {underlay} (MTU {underlay_mtu}), whose headers take "
                         f"{VXLAN_OVERHEAD} bytes, so at most {limit} fits")
    return requested


def agreed(current: Definition, members: Iterable[str], oid: OverlayId, *, vni: int | None,
           mtu: int | None, mtu_limit: int, port: int) -> Definition:
    """The definition a host joining an existing overlay takes, or Conflict naming the hosts
    that hold the other one. Unset options follow the definition; the MTU must also fit
    this host's underlay."""
    holders = ", ".join(sorted(members)) or "no host (yet)"
    held = f"overlay {oid} is defined with VNI {current.vni}, MTU {current.mtu} and UDP port " \
           f"{current.port} by {holders}"
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
