"""The firewall of encrypted overlays: their VXLAN is accepted only from the WireGuard link.

Linux hands a VXLAN packet to a device by UDP port and VNI alone, whatever interface it came
in on: a frame sent from the underlay to the port of an encrypted overlay would reach its
containers, unauthenticated, as if it had come through WireGuard. So encrypted overlays have
a VXLAN port of their own (--encrypted-vxlan-port), and this table drops that port on every
interface but the WireGuard link, before any socket sees it (input hook, both families).
The WireGuard port itself (--wireguard-port) is accepted: WireGuard authenticates every
packet, and drops what no peer's key sealed.

    table inet pynet_wireguard                      (pynet's, separate from `inet pynet`)
      chain input (filter hook input, priority filter - 10)
        udp dport ENCRYPTED_VXLAN_PORT iifname != LINK drop
        udp dport ENCRYPTED_VXLAN_PORT @th,96,24 VNI ip saddr != { its members } drop   (per overlay)
        udp dport WIREGUARD_PORT accept

The per-overlay rules keep a WireGuard peer that shares only another encrypted overlay with
this host from sending frames into this one (WireGuard's allowed IPs already pin each peer
to its own tunnel address). Installed before the first encrypted VXLAN device is made,
re-installed whole when an overlay's members change, removed after the last one went
(driver/kinds/overlay/encryption.py). Each install replaces the whole table in one nft
transaction. Values are checked before they are written into the script (nft_rules).
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from .nft import Nft
from .nft_rules import script_value

FAMILY = "inet"
TABLE = "pynet_wireguard"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{port!r} is not a UDP port")
    return port


def install_script(link: str, wireguard_port: int, vxlan_port: int,
                   members: Mapping[int, Iterable[str]] | None = None) -> str:
    """The whole table. `members`: VNI of each encrypted overlay of this host -> the tunnel
    addresses of its other members: a frame for that VNI from any other tunnel address (a
    WireGuard peer that shares another encrypted overlay only) is dropped. The VNI is the
    24 bits after the UDP header and the VXLAN flags: @th,96,24."""
    t = f"{FAMILY} {TABLE}"
    name = script_value(link, _IFNAME)
    port = _port(vxlan_port)
    lines = [
        f"add table {t}",
        f"delete table {t}",
        f"add table {t}",
        f"add chain {t} input {{ type filter hook input priority filter - 10; policy accept; }}",
        f'add rule {t} input udp dport {port} iifname != "{name}" counter drop '
        f'comment "encrypted overlays: VXLAN only through WireGuard"',
    ]
    for vni, addresses in sorted((members or {}).items()):
        allowed = sorted({str(ipaddress.IPv4Address(a)) for a in addresses}, key=ipaddress.IPv4Address)
        match = f"udp dport {port} @th,96,24 {_vni(vni)}"
        if allowed:
            lines.append(f'add rule {t} input {match} ip saddr != {{ {", ".join(allowed)} }} counter drop '
                         f'comment "VNI {vni}: its members only"')
        else:
            lines.append(f'add rule {t} input {match} counter drop comment "VNI {vni}: no other member"')
    lines.append(f'add rule {t} input udp dport {_port(wireguard_port)} counter accept comment "WireGuard"')
    return "\n".join(lines) + "\n"


def _vni(vni: int) -> int:
    if isinstance(vni, bool) or not isinstance(vni, int) or not 1 <= vni <= 16777215:
        raise ValueError(f"{vni!r} is not a VNI")
    return vni


def covers(listing: str, link: str, wireguard_port: int, vxlan_port: int) -> bool:
    """Whether `nft list table inet pynet_wireguard` output has the base rules of this link
    and these ports (nft prints `udp dport 4799 iifname != "pnwg0" counter packets ...`)."""
    return (f'udp dport {_port(vxlan_port)} iifname != "{script_value(link, _IFNAME)}"' in listing
            and f"udp dport {_port(wireguard_port)} counter" in listing)


def remove_script() -> str:
    t = f"{FAMILY} {TABLE}"
    return f"add table {t}\ndelete table {t}\n"


class WireGuardGuard:
    """install()/remove() of the table, in this namespace or `netns` (kernel tests)."""

    def __init__(self, netns: str | None = None, nft: Nft | None = None) -> None:
        self.netns = netns
        self._nft = nft

    @property
    def nft(self) -> Nft:
        if self._nft is None:
            self._nft = Nft(self.netns)
        return self._nft

    def install(self, link: str, wireguard_port: int, vxlan_port: int,
                members: Mapping[int, Iterable[str]] | None = None) -> None:
        self.nft.apply(install_script(link, wireguard_port, vxlan_port, members))

    def remove(self) -> None:
        self.nft.apply(remove_script())

    def covers(self, link: str, wireguard_port: int, vxlan_port: int) -> bool:
        """Whether the table is there with the rules of this link and these ports (one a
        previous plugin process installed: kept, with its per-overlay rules)."""
        return covers(self.text(), link, wireguard_port, vxlan_port)

    def text(self) -> str:
        return self.nft.text(f"table {FAMILY} {TABLE}")
