"""What pynet asks of the kernel, in the words of what it is for.

Every `ensure_*` creates or verifies (safe to repeat); every `remove_*` accepts that the
object is already gone. Only pyroute2_netlink.py talks to the kernel; tests/fakes/netlink.py
is held to the same contract (tests/contract/test_netlink_contract.py runs both).

Errors (defined below): a method raises NoSuchLink when a link it needs is missing,
LinkExists when a name it would create is taken, NoSuchNamespace when the namespace it is
told to work in is missing, NotSupported when the kernel lacks the feature, and KernelError
for any other refusal. Reading methods (`link`, `vxlan`, `found_link`...) answer None for
an absent link instead; `remove_*` answer False.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, IPv4Network, IPv6Network, ip_interface
from typing import ContextManager, Protocol

from pynet_core.errors import BadRequest, Conflict, ErrorCategory, PynetError

Interface = IPv4Interface | IPv6Interface


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    kind: str | None          # 'bridge', 'veth', 'macvlan', ... None for physical devices
    up: bool
    mtu: int
    master: str | None        # bridge it is a port of
    parent: str | None        # lower device (macvlan, vlan)
    mac: str
    loopback: bool = False


@dataclass(frozen=True, slots=True)
class FoundLink:
    """What pynet may change on a link it did not make (a user's bridge), read before it
    changes anything, so that it can put back exactly that."""
    mtu: int
    up: bool
    addresses: tuple[str, ...]  # CIDR ("10.1.0.1/24"); not IPv6 link-local (the kernel's)
    route_localnet: bool        # net.ipv4.conf.<link>.route_localnet

    def to_dict(self) -> dict:
        return {"mtu": self.mtu, "up": self.up, "addresses": list(self.addresses),
                "route_localnet": self.route_localnet}

    @classmethod
    def from_dict(cls, data: object) -> "FoundLink":
        """Read back from a store others can write: ValueError naming the field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"'found_bridge' must be an object, got {data!r:.60}")
        mtu, addresses = data.get("mtu"), data.get("addresses")
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise ValueError(f"'found_bridge.mtu' must be a number from 68 to 65535, got {mtu!r:.60}")
        for name in ("up", "route_localnet"):
            if not isinstance(data.get(name), bool):
                raise ValueError(f"'found_bridge.{name}' must be true or false, got {data.get(name)!r:.60}")
        if not isinstance(addresses, list):
            raise ValueError(f"'found_bridge.addresses' must be a list, got {addresses!r:.60}")
        for address in addresses:
            try:
                ip_interface(address if isinstance(address, str) else None)
            except ValueError:
                raise ValueError(f"'found_bridge.addresses' holds {address!r:.60}, not an "
                                 "address with a prefix length") from None
        return cls(mtu=mtu, up=data["up"], addresses=tuple(addresses),
                   route_localnet=data["route_localnet"])


# The all-zero MAC of a VXLAN device's head-end replication entries: broadcast, multicast
# and unknown unicast go to every remote VTEP listed under it (one entry per VTEP).
FLOOD_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True, slots=True)
class Vxlan:
    """What a VXLAN device was made with (read back to verify, e.g. after a restart)."""
    name: str
    vni: int
    local: str | None
    port: int
    learning: bool
    suppress_arp: bool  # neighbour suppression on its bridge port
    mtu: int
    master: str | None


@dataclass(frozen=True, slots=True, order=True)
class FdbEntry:
    """A static forwarding entry of a VXLAN device: frames to `mac` go to VTEP `dst`."""
    mac: str
    dst: str


@dataclass(frozen=True, slots=True, order=True)
class Neighbour:
    """A permanent neighbour (ARP) entry: `ip` is at `mac`."""
    ip: str
    mac: str


@dataclass(frozen=True, slots=True)
class PeerEntries:
    """What a VXLAN device holds of peers (as fdb_entries) and its bridge (as neighbours),
    read with one FDB dump and one neighbour dump."""
    fdb: list[FdbEntry]
    neighbours: list[Neighbour]


# --- the errors every Netlink raises (the real adapter and the test fake alike) ---------
# Each is a domain error of pynet_core/errors.py, so a plugin call that meets one answers
# as before; a caller catches the one it means (a namespace already gone, a name taken) and
# lets the others, real failures, propagate.

class KernelError(PynetError):
    """The kernel refused or failed an operation for a reason none of the errors below
    names: the message says what was being done, the kernel's words and the errno."""


class NoSuchNamespace(KernelError):
    """The named network namespace an operation needs does not exist (or is not mounted
    yet: another caller is creating it)."""


class NoSuchLink(BadRequest):
    """A link an operation needs (a bridge to attach to, a parent, a VXLAN device, the
    link to change) does not exist."""


class LinkExists(Conflict):
    """A link name is taken (by any link, or by one that is not what was asked: a bridge
    name held by a veth); for a VXLAN device also its VNI on its UDP port, which the kernel
    does not tell apart from its name."""


class NotSupported(KernelError):
    """The kernel lacks a feature pynet needs (e.g. no 802.1q VLAN support)."""

    category = ErrorCategory.UNSUPPORTED


class Netlink(Protocol):
    def link(self, name: str) -> Link | None: ...

    def links(self) -> list[Link]: ...

    def ensure_bridge(self, name: str, mtu: int | None, addresses: list[Interface]) -> bool:
        """Bridge up with this MTU (None: the MTU it has is left alone) and these addresses
        (others it has stay); True if it had to be created. LinkExists if `name` exists but
        is not a bridge."""

    def found_link(self, name: str) -> FoundLink | None:
        """What link `name` is like now (MTU, up, addresses, route_localnet); None if absent."""

    def put_back(self, name: str, found: FoundLink, remove: list[Interface]) -> None:
        """Link `name` as it was found: the addresses `remove` (pynet's) go, the MTU is
        found.mtu again (pynet's `mtu` option, or the kernel following the ports: a bridge
        made with an MTU drops to 1500 when its last port leaves), and a link found down
        is down again. Absent is fine."""

    def set_bridge_netfilter(self, name: str, on: bool) -> None:
        """Whether frames between the ports of bridge `name` go through the iptables,
        ip6tables and arptables hooks (IFLA_BR_NF_CALL_*). The kernel ORs this with the
        global net.bridge.bridge-nf-call-* sysctls: `on` always takes effect, off only
        where the global sysctl is off too. NoSuchLink if there is no link `name`,
        KernelError if it is not a bridge."""

    def bridge_netfilter(self, name: str) -> bool | None:
        """The bridge's own IFLA_BR_NF_CALL_IPTABLES; None if there is no such bridge."""

    def add_veth(self, host: str, peer: str, mtu: int, master: str, peer_mac: str | None,
                 netns: str | None = None) -> None:
        """A new veth pair: `host` up on bridge `master`, `peer` down (Docker moves it).
        With `netns`, the `host` end and `master` are in that namespace, `peer` here.
        NoSuchLink if `master` is missing (checked first), LinkExists if either name is
        taken, NoSuchNamespace if `netns` is."""

    def ensure_port(self, name: str, master: str) -> None:
        """Link `name` is an up port of bridge `master`. NoSuchLink if either is missing."""

    def add_macvlan(self, name: str, parent: str, mode: str, mtu: int, mac: str | None) -> None:
        """A new macvlan `name` on `parent`, down (Docker moves it). NoSuchLink if `parent`
        is missing, LinkExists if `name` is taken, KernelError when the kernel will not
        (a parent that is not Ethernet, an MTU above the parent's, passthru not alone)."""

    def add_vlan(self, name: str, base: str, vlan_id: int) -> None:
        """A new 802.1q sub-interface `name` of `base`, up. NotSupported when the kernel
        has no 802.1q support, NoSuchLink if `base` is missing, LinkExists if `name` is
        taken."""

    def remove_link(self, name: str) -> bool:
        """Delete the link; False if it did not exist."""

    def routes(self) -> list[IPv4Network | IPv6Network]:
        """Destinations in the main routing table (no default route)."""

    # --- the underlay ------------------------------------------------------------------
    def local_addresses(self) -> list[tuple[str, Interface]]:
        """(link name, address) of every address in this namespace."""

    def default_route_links(self) -> list[str]:
        """Links the main table's default routes leave by (IPv4)."""

    # --- namespaces (overlay networks keep their bridge in one of their own) ----------
    def ensure_netns(self, name: str) -> bool:
        """A named network namespace (/run/netns/NAME); True if it had to be created."""

    def remove_netns(self, name: str) -> bool:
        """Delete the named namespace; False if absent. The kernel removes the links inside
        (and the far ends of their veths) a moment later, asynchronously: remove first what
        must be gone at once (a VXLAN device whose VNI may be reused)."""

    def within(self, netns: str) -> "Netlink":
        """These same operations inside the named namespace: NoSuchNamespace if it does
        not exist (a later call into one removed meanwhile raises it too)."""

    def session(self) -> ContextManager["Netlink"]:
        """These same operations on one kernel socket, opened on entry and closed on exit,
        for a batch of calls (each call otherwise opens its own; into a named namespace
        that costs a forked helper, ~7 ms). For one thread at a time."""

    # --- VXLAN -------------------------------------------------------------------------
    def add_vxlan(self, name: str, vni: int, local: str, port: int, mtu: int, master: str,
                  netns: str | None = None) -> None:
        """A VXLAN device: learning off, no multicast group (peers are static FDB entries).
        Its UDP socket lives in *this* namespace (on the underlay); the device itself is
        moved into `netns` when given and made an up port of bridge `master` there, with
        neighbour suppression on: ARP for an address with a neighbour entry on `master` is
        answered by the bridge, any other ARP request floods to every remote VTEP.
        NoSuchLink if `master` is missing, LinkExists if `name` exists or another device
        here already carries `vni` on `port`, NoSuchNamespace if `netns` is missing."""

    def vxlan(self, name: str) -> Vxlan | None: ...

    # --- peers on a VXLAN device (all idempotent; NoSuchLink if `dev` is missing) -------
    def fdb_entries(self, dev: str) -> list[FdbEntry]:
        """The device's static entries that name a remote VTEP (FLOOD_MAC ones included,
        one per VTEP)."""

    def ensure_fdb(self, dev: str, mac: str, dst: str) -> None:
        """`mac` is sent to VTEP `dst`. A unicast MAC has one VTEP (replaced), and a static
        entry on the bridge pointing at the device; FLOOD_MAC gets `dst` appended beside the
        VTEPs it already lists."""

    def remove_fdb(self, dev: str, mac: str, dst: str) -> bool:
        """Remove that one (mac, VTEP) entry; False if it was not there."""

    def neighbours(self, dev: str) -> list[Neighbour]:
        """The device's permanent IPv4 neighbour entries (overlays: on their bridge, where
        neighbour suppression looks)."""

    def ensure_neighbour(self, dev: str, ip: str, mac: str) -> None:
        """A permanent entry `ip` at `mac` (replacing any other for `ip`)."""

    def remove_neighbour(self, dev: str, ip: str) -> bool:
        """False if there was no entry for `ip`."""

    # --- peers in bulk (a sync of thousands of peers) -----------------------------------
    def peer_entries(self, dev: str, bridge: str) -> PeerEntries:
        """fdb_entries(dev) and neighbours(bridge) at once: one dump of each."""

    def change_peers(self, dev: str, bridge: str, *, fdb_remove: Iterable[FdbEntry] = (),
                     neigh_remove: Iterable[Neighbour] = (), fdb_add: Iterable[FdbEntry] = (),
                     neigh_add: Iterable[Neighbour] = ()) -> list[str]:
        """remove_fdb, remove_neighbour (on `bridge`), ensure_fdb, ensure_neighbour (on
        `bridge`) for many entries, in that order, without reading the tables again: the
        caller diffs against peer_entries() first (a FLOOD_MAC entry to add must be absent).
        Each entry stands alone: one the kernel refuses is reported and the rest go on.
        Returns one message per entry that failed (empty: all done); an entry already gone
        is no failure. NoSuchLink when `dev` or `bridge` does not exist."""
