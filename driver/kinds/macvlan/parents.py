"""Pure rules for macvlan lower devices: 802.1q parent names and who may share a parent.

No I/O here: the macvlan kind feeds in records and kernel facts, these say yes or why not.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pynet_core.errors import BadRequest, Conflict
from pynet_core.wire import printable
from driver.models import NetworkRecord

VLAN_MIN, VLAN_MAX = 1, 4094


def split_vlan(parent: str) -> tuple[str, int] | None:
    """'eth0.42' -> ('eth0', 42); None when `parent` has no dot (not a VLAN name).

    Raises BadRequest for a dotted name that is not IFACE.VLAN with VLAN 1-4094: pynet
    would not know which sub-interface to create.
    """
    if "." not in parent:
        return None
    base, _, vid = parent.partition(".")
    if not base or not vid.isdigit() or "." in vid:
        raise BadRequest(f"macvlan parent {printable(parent)} does not exist, and it is not an 802.1q "
                         "sub-interface name pynet could create (IFACE.VLAN, e.g. eth0.42)")
    vlan_id = int(vid)
    if not VLAN_MIN <= vlan_id <= VLAN_MAX:
        raise BadRequest(f"macvlan parent {printable(parent)}: VLAN ID {vlan_id} is outside "
                         f"{VLAN_MIN}-{VLAN_MAX}")
    return base, vlan_id


def check_sharing(net: NetworkRecord, lower: str, others: Iterable[NetworkRecord]) -> None:
    """Refuse `net` on `lower` if another pynet network there is in passthru mode (or `net`
    is), or serves an overlapping subnet: two networks on one wire with overlapping
    subnets would answer each other's ARP and steal each other's traffic."""
    mode = net.options.macvlan_mode
    for other in others:
        if other.id == net.id or other.lower != lower:
            continue
        if mode == "passthru":
            raise Conflict(f"macvlan parent {lower} is already the parent of pynet network "
                           f"{other.id[:12]}; passthru mode needs the parent to itself")
        if other.options.macvlan_mode == "passthru":
            raise Conflict(f"macvlan parent {lower} is already the parent of pynet network "
                           f"{other.id[:12]} in passthru mode, which cannot share its parent")
        clash = _overlap(net.subnets, other.subnets)
        if clash:
            mine, theirs = clash
            raise Conflict(f"macvlan parent {lower} is already the parent of pynet network "
                           f"{other.id[:12]} with subnet {theirs}, which overlaps {mine}")


def _overlap(ours: Iterable[str], theirs: Iterable[str]) -> tuple[str, str] | None:
    for a in ours:
        na = ipaddress.ip_network(a, strict=False)
        for b in theirs:
            nb = ipaddress.ip_network(b, strict=False)
            if na.version == nb.version and na.overlaps(nb):
                return a, b
    return None


def lower_still_used(net: NetworkRecord, others: Iterable[NetworkRecord]) -> bool:
    """Whether any other network still sits on `net`'s lower device (the reference count
    of a sub-interface pynet made)."""
    return any(o.id != net.id and o.lower == net.lower for o in others)
