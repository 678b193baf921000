"""Encrypted overlays: which hosts' WireGuard records this host believes, and the WireGuard
peer set of its one WireGuard link (pure).

Each host has one WireGuard link carrying the VXLAN of every encrypted overlay it is on. Its
peers are the other hosts that share at least one encrypted overlay with it and are alive;
each peer's allowed IPs are its tunnel address alone (/32), so WireGuard's cryptokey routing
accepts from a peer only packets sourced from that peer's tunnel address: a host cannot
send VXLAN as another host, even from inside the tunnel.

A host's record (model.WireGuardHost, under its own prefix) is believed when:
* its tunnel address is inside --wireguard-subnet, not its network or broadcast address, and
  the cluster-wide claim of that address (v1/overlay/tunnels/<ip>, create-if-absent) names
  that host: no two hosts are believed with one address (WireGuard would silently give it
  to the last peer naming it), and a host cannot take the address another host holds;
* its address is not this host's own and its public key is not this host's own;
* no other host's record gives the same public key (then neither: keys are per host).
This host's own record is never taken from the store: its key is its key file's, its
address its own claim (the caller's `mine`).

Which address a peer's VXLAN entries point to is taken from the same believed record that
gives its key, so a record and its key always go together.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from driver.wireguard.api import Endpoint, Peer, PublicKey

from .admission import Refused
from .model import OverlayId, OverlayView, WireGuardHost

# WireGuard keepalive (seconds) towards each peer: keeps NAT and stateful firewalls between
# the hosts open, and makes a healed host re-handshake without waiting for traffic.
KEEPALIVE = 25
# The one WireGuard link of a host.
LINK = "pnwg0"


@dataclass(frozen=True, slots=True)
class Believed:
    hosts: Mapping[str, WireGuardHost]      # other hosts whose record is believed
    refused: tuple[Refused, ...] = ()


def believe(records: Mapping[str, WireGuardHost], claims: Mapping[str, str], host: str,
            subnet: str, mine: WireGuardHost | None) -> Believed:
    """The other hosts' WireGuard records this host believes. `claims`: tunnel address ->
    the host whose claim it is. `subnet`: --wireguard-subnet. `mine`: this host's own record
    as it knows it (None: it has none yet)."""
    net = ipaddress.IPv4Network(subnet)
    refused: list[Refused] = []
    candidates: dict[str, WireGuardHost] = {}
    for other, record in sorted(records.items()):
        if other == host:
            continue
        address = ipaddress.IPv4Address(record.address)
        reason = None
        if address not in net:
            reason = f"its tunnel address {address} is outside --wireguard-subnet {net}"
        elif address in (net.network_address, net.broadcast_address):
            reason = f"its tunnel address {address} is the network or broadcast address of {net}"
        elif claims.get(record.address) != other:
            holder = claims.get(record.address)
            reason = (f"its tunnel address {address} is claimed by " +
                      (f"host {holder!r}" if holder else "no host"))
        elif mine is not None and record.address == mine.address:
            reason = f"its tunnel address {address} is this host's own"
        elif mine is not None and record.public_key == mine.public_key:
            reason = "its public key is this host's own"
        if reason is not None:
            refused.append(Refused(other, None, reason))
            continue
        candidates[other] = record
    by_key: dict[str, list[str]] = {}
    for other, record in candidates.items():
        by_key.setdefault(record.public_key, []).append(other)
    believed = {}
    for other, record in candidates.items():
        sharing = by_key[record.public_key]
        if len(sharing) > 1:
            refused.append(Refused(other, None, f"its public key is also given by host(s) "
                                                f"{', '.join(h for h in sharing if h != other)}"))
            continue
        believed[other] = record
    return Believed(believed, tuple(refused))


def encrypted_peers_of(views: Mapping[OverlayId, OverlayView], local: Iterable[OverlayId],
                       host: str, alive: Callable[[str], bool]) -> frozenset[str]:
    """The other hosts that are alive members of an encrypted overlay this host has a network
    on. `local`: this host's encrypted overlays, from its own records (never the store's
    definition: an unreadable definition must not turn an encrypted overlay into a clear one)."""
    found: set[str] = set()
    for oid in local:
        view = views.get(oid)
        if view is None:
            continue
        found |= {h for h in view.members if h != host and alive(h)}
    return frozenset(found)


def wireguard_peers(hosts: Iterable[str], believed: Believed,
                    keepalive: int = KEEPALIVE) -> tuple[Peer, ...]:
    """The peer set of this host's WireGuard link: each of `hosts` with a believed record,
    allowed IPs its tunnel address alone. Sorted by host: the same set, the same order."""
    peers = []
    for other in sorted(hosts):
        record = believed.hosts.get(other)
        if record is None:
            continue
        peers.append(Peer(PublicKey.parse(record.public_key), Endpoint.parse(record.endpoint),
                          (ipaddress.IPv4Network(f"{record.address}/32"),), keepalive))
    return tuple(peers)


def tunnel_addresses(believed: Believed) -> dict[str, str]:
    """host -> its tunnel address: where an encrypted overlay's VXLAN entries for that host's
    endpoints point (peers.desired's `via`)."""
    return {other: record.address for other, record in believed.hosts.items()}


def first_free_address(subnet: str, taken: Iterable[str]) -> str | None:
    """The lowest host address of `subnet` no claim takes (None: the subnet is full)."""
    used = set(taken)
    for address in ipaddress.IPv4Network(subnet).hosts():
        if str(address) not in used:
            return str(address)
    return None
