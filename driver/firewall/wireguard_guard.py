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
        udp dport WIREGUARD_PORT accept

Installed before the first encrypted VXLAN device is made, removed after the last one went
(driver/kinds/overlay/encryption.py). Each install replaces the whole table in one nft
transaction. Values are checked before they are written into the script (nft_rules).
"""
from __future__ import annotations

import re

from .nft import Nft
from .nft_rules import script_value

FAMILY = "inet"
TABLE = "pynet_wireguard"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{port!r} is not a UDP port")
    return port


def install_script(link: str, wireguard_port: int, vxlan_port: int) -> str:
    t = f"{FAMILY} {TABLE}"
    name = script_value(link, _IFNAME)
    return "\n".join([
        f"add table {t}",
        f"delete table {t}",
        f"add table {t}",
        f"add chain {t} input {{ type filter hook input priority filter - 10; policy accept; }}",
        f'add rule {t} input udp dport {_port(vxlan_port)} iifname != "{name}" counter drop '
        f'comment "encrypted overlays: VXLAN only through WireGuard"',
        f'add rule {t} input udp dport {_port(wireguard_port)} counter accept comment "WireGuard"',
    ]) + "\n"


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

    def install(self, link: str, wireguard_port: int, vxlan_port: int) -> None:
        self.nft.apply(install_script(link, wireguard_port, vxlan_port))

    def remove(self) -> None:
        self.nft.apply(remove_script())

    def text(self) -> str:
        return self.nft.text(f"table {FAMILY} {TABLE}")
