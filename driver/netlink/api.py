"""What pynet asks of the kernel, in the words of what it is for.

Every `ensure_*` creates or verifies (safe to repeat); every `remove_*` accepts that the
object is already gone. Only pyroute2_netlink.py talks to the kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, IPv4Network, IPv6Network
from typing import Protocol

from pynet.errors import PynetError

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


class NotSupported(PynetError):
    """The kernel lacks a feature pynet needs (e.g. no 802.1q VLAN support)."""

    status = 501


class Netlink(Protocol):
    def link(self, name: str) -> Link | None: ...

    def links(self) -> list[Link]: ...

    def ensure_bridge(self, name: str, mtu: int, addresses: list[Interface]) -> bool:
        """Bridge up with this MTU and these addresses; True if it had to be created.
        Raises if `name` exists but is not a bridge."""

    def add_veth(self, host: str, peer: str, mtu: int, master: str, peer_mac: str | None) -> None:
        """A new veth pair: `host` up on bridge `master`, `peer` down (Docker moves it)."""

    def ensure_port(self, name: str, master: str) -> None:
        """Link `name` is an up port of bridge `master`."""

    def add_macvlan(self, name: str, parent: str, mode: str, mtu: int, mac: str | None) -> None: ...

    def add_vlan(self, name: str, base: str, vlan_id: int) -> None:
        """A new 802.1q sub-interface `name` of `base`, up. Raises NotSupported when the
        kernel has no 802.1q support, Conflict if `name` exists."""

    def remove_link(self, name: str) -> bool:
        """Delete the link; False if it did not exist."""

    def routes(self) -> list[IPv4Network | IPv6Network]:
        """Destinations in the main routing table (no default route)."""
