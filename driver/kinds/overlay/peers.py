"""The peer entries a host's VXLAN device should have, and what to change to get there (pure).

For an overlay this host is a member of, every *other* member that is alive contributes
* a head-end replication entry: FLOOD_MAC -> its VTEP (broadcast, ARP for unknown
  addresses, unknown unicast reach every host);
* for each of its endpoints, a static FDB entry MAC -> its VTEP and a permanent neighbour
  entry IP -> MAC (the bridge answers ARP for it locally: neighbour suppression).
The entries of this host's own endpoints never appear: the local bridge knows them.

An encrypted overlay (`via` given) points every entry at the other host's WireGuard tunnel
address instead of its VTEP, so its VXLAN travels only through the WireGuard link; a host
with no believed WireGuard record (tunnels.py) gets no entry at all, never its VTEP.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from driver.netlink.api import FLOOD_MAC, FdbEntry, Neighbour

from .model import OverlayView


@dataclass(frozen=True, slots=True)
class Desired:
    fdb: frozenset[FdbEntry]
    neighbours: frozenset[Neighbour]


@dataclass(frozen=True, slots=True)
class Changes:
    fdb_remove: tuple[FdbEntry, ...] = ()
    neigh_remove: tuple[Neighbour, ...] = ()
    fdb_add: tuple[FdbEntry, ...] = ()
    neigh_add: tuple[Neighbour, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fdb_remove or self.neigh_remove or self.fdb_add or self.neigh_add)

    def count(self) -> int:
        return len(self.fdb_remove) + len(self.neigh_remove) + len(self.fdb_add) + len(self.neigh_add)


def desired(view: OverlayView, host: str, alive: Callable[[str], bool],
            via: Mapping[str, str] | None = None) -> Desired:
    """`via`: for an encrypted overlay, host -> its tunnel address (None: unencrypted, the
    members' VTEPs)."""
    remote = {h: m for h, m in view.members.items() if h != host and alive(h)
              and (via is None or h in via)}
    dst = {h: (m.vtep if via is None else via[h]) for h, m in remote.items()}
    fdb = {FdbEntry(FLOOD_MAC, dst[h]) for h in remote}
    macs: dict[str, str] = {}
    ips: dict[str, str] = {}
    # Sorted, so that if two endpoints ever claim one MAC or IP every host picks the same.
    for peer in sorted(view.peers, key=lambda p: (p.host, p.endpoint)):
        if peer.host not in remote:
            continue
        macs.setdefault(peer.mac.lower(), dst[peer.host])
        ips.setdefault(peer.ip, peer.mac.lower())
    fdb |= {FdbEntry(mac, vtep) for mac, vtep in macs.items()}
    return Desired(frozenset(fdb), frozenset(Neighbour(ip, mac) for ip, mac in ips.items()))


def diff(want: Desired, fdb: Iterable[FdbEntry], neighbours: Iterable[Neighbour]) -> Changes:
    """What turns the kernel's entries into `want`. Removals are applied first: a unicast
    MAC holds one VTEP, so a MAC that moved host is removed, then added. A neighbour whose
    MAC changed is only added: adding replaces the entry for that IP."""
    have_fdb = {FdbEntry(e.mac.lower(), e.dst) for e in fdb}
    have_neigh = {Neighbour(n.ip, n.mac.lower()) for n in neighbours}
    wanted_ips = {n.ip for n in want.neighbours}
    return Changes(
        fdb_remove=tuple(sorted(have_fdb - want.fdb)),
        neigh_remove=tuple(sorted(n for n in have_neigh if n.ip not in wanted_ips)),
        fdb_add=tuple(sorted(want.fdb - have_fdb)),
        neigh_add=tuple(sorted(want.neighbours - have_neigh)),
    )
