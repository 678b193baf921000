"""What pynet records about networks and endpoints (pure data, JSON round-trip)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .options import NetworkOptions
from .portmap import PortBinding

DEFAULT_MTU = 1500

# A record's state. "creating" is written before any kernel work (the intent: restore knows
# exactly what pynet may have made), "ready" once it is all made, "deleting" before the
# kernel objects go. Restore finishes what a crash interrupted: a record that is not ready
# has its kernel objects removed and goes.
CREATING, READY, DELETING = "creating", "ready", "deleting"


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    id: str
    options: NetworkOptions
    # The network's Linux bridge, if its kind uses one (chosen by the kind), and whether
    # pynet made it: a pre-existing one named by the user is left in place.
    bridge: str | None = None
    bridge_created: bool = False
    # Gateway interfaces as CIDR ("10.1.0.1/24") and the subnets, from Docker's IPAM data.
    gateways: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    # macvlan: the link the endpoints' macvlans sit on (the parent, its 802.1q sub-interface,
    # or a bridge made for a network without parent), and whether pynet made that link.
    lower: str | None = None
    lower_created: bool = False
    state: str = READY
    # A random id per CreateNetwork attempt: what a late-landing write of a failed attempt
    # is recognised by (pynet/store/fenced.py).
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
    def mtu(self) -> int:
        return self.link_mtu or self.options.mtu or DEFAULT_MTU

    def to_dict(self) -> dict:
        data = asdict(self)
        data["options"] = self.options.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkRecord":
        return cls(
            id=data["id"], options=NetworkOptions.from_dict(data["options"]),
            bridge=data.get("bridge"), bridge_created=data.get("bridge_created", False),
            gateways=tuple(data.get("gateways", ())), subnets=tuple(data.get("subnets", ())),
            lower=data.get("lower"), lower_created=data.get("lower_created", False),
            state=data.get("state", READY), attempt=data.get("attempt", ""),
            address_space=data.get("address_space", ""), netns=data.get("netns"),
            vni=data.get("vni"), vtep=data.get("vtep"), link_mtu=data.get("link_mtu"),
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
        return cls(**{**data, "addresses": tuple(data["addresses"]),
                      "published": tuple(PortBinding.from_dict(p) for p in data.get("published", ()))})
