"""Which of the store's overlay records this host believes (pure).

The records are well formed once parsed (model.py); here they are checked against each other
and against what this host knows for itself, because any host can write the shared store
and no host may speak for another:
* this host's own member is never the store's: it is built from this host's own network
  record (so a forged member for this host cannot point one overlay's peers at another
  overlay's device), and no other member may use one of this host's VTEPs;
* a peer is believed only if its address is in the overlay's subnet (not its network or
  broadcast address), its VTEP is its host's member VTEP, its address is claimed in the
  overlay's pool by that same host (the IPAM's record), and neither its MAC nor its address
  is one of this host's own endpoints' on the overlay;
* several live hosts giving one address: the claim's holder keeps it only while every other
  record was written after the claim (a forgery, or a leftover); a claim rewritten under an
  already published record is a takeover, and then neither is programmed. Several hosts
  giving one MAC: neither. Conflicts are reported by `pynet doctor`.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from driver import naming
from driver.models import DELETING, READY, EndpointRecord, NetworkRecord

from .claims import Owner
from .model import Member, OverlayId, OverlayView, Peer, overlay_of


@dataclass(frozen=True, slots=True)
class Local:
    """This host's side, from its own records: its member of the overlay (None: it has no
    network on it), every VTEP address it uses, and the MACs and addresses of its endpoints
    on the overlay."""
    member: Member | None
    vteps: frozenset[str] = frozenset()
    macs: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()
    ready: bool = True  # False: its network is still being created
    # -o encrypted, from this host's own network record (never the store's definition).
    encrypted: bool = False
    vni: int | None = None  # this host's own record's (the guard's per-overlay rule)


@dataclass(frozen=True, slots=True)
class Refused:
    """A record not believed: whose (host, endpoint None for a member) and why."""
    host: str
    endpoint: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Clash:
    """Several hosts giving one address or MAC in one overlay."""
    what: str  # "address" or "MAC"
    value: str
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Admitted:
    view: OverlayView  # only what is believed; this host's member is its own
    refused: tuple[Refused, ...] = ()
    clashes: tuple[Clash, ...] = ()
    # The store's member record for this host, when it differs from this host's own.
    own_member_differs: bool = field(default=False)


def admit(view: OverlayView, host: str, local: Local, claims: Mapping[str, Owner] | None,
          alive: Callable[[str], bool] = lambda _host: True,
          written: Callable[[Peer], int] = lambda _peer: 0) -> Admitted:
    """The part of `view` this host believes. `claims`: address -> its Owner (the host whose
    claim in the overlay's pool it is, and since which store version; gateways left out);
    None when they could not be read, then no remote peer is believed. `alive`: hosts whose
    records count at all (a dead host's entries are withdrawn anyway: peers.desired).
    `written`: the store version of a peer's record (registry.peer_version). (Swarm
    too: each node claims its tasks' addresses in its own local pool, docs/swarm.md.)"""
    refused: list[Refused] = []
    stored_own = view.members.get(host)
    members: dict[str, Member] = {}
    if local.member is not None:
        members[host] = local.member
    for other, member in view.members.items():
        if other == host:
            continue
        if member.vtep in local.vteps:
            refused.append(Refused(other, None, f"its VTEP {member.vtep} is this host's own"))
            continue
        members[other] = member
    subnet = ipaddress.IPv4Network(view.id.subnet) if _is_v4(view.id.subnet) else None
    plausible: list[Peer] = []
    for peer in view.peers:
        if peer.host == host:
            continue  # this host's endpoints are on its own bridge
        reason = _implausible(peer, members.get(peer.host), subnet, local)
        if reason is not None:
            refused.append(Refused(peer.host, peer.endpoint, reason))
        elif alive(peer.host):
            plausible.append(peer)
    if claims is None:
        refused += [Refused(p.host, p.endpoint, "the overlay's address claims could not be read")
                    for p in plausible]
        plausible = []
    sole, clashes, lost = _one_per_address(plausible, claims or {}, written)
    refused += lost
    backed: list[Peer] = []
    for peer in sole:
        reason = _unclaimed(peer, claims or {})
        if reason is not None:
            refused.append(Refused(peer.host, peer.endpoint, reason))
        else:
            backed.append(peer)
    # No claim backs a MAC: several hosts giving one program neither.
    kept, mac_clashes = _without_mac_clashes(backed)
    clashes += mac_clashes
    for peer in backed:
        for clash in mac_clashes:
            if clash.value == peer.mac:
                refused.append(Refused(peer.host, peer.endpoint, _also(clash, peer.host)))
    differs = stored_own is not None and (local.member is None or
                                          replace(stored_own, attempt="") != replace(local.member, attempt=""))
    return Admitted(replace(view, members=members, peers=tuple(kept)), tuple(refused),
                    tuple(clashes), differs)


def _one_per_address(peers: list[Peer], claims: Mapping[str, Owner], written: Callable[[Peer], int]
                     ) -> tuple[list[Peer], list[Clash], list[Refused]]:
    """At most one peer per address, among peers of several live hosts giving it.

    Address claims are shared keys any host can rewrite, but a peer record only its own
    host can write, and the store's versions only grow. So when hosts clash on an address,
    its claim's holder keeps it only if every other host's record was written after the
    claim took its current form: they published an address already held (forged, or left
    over). A claim changed under a record that was already published is a claim taken
    over: then neither is programmed (denial of service at worst, never a redirect)."""
    by_ip: dict[str, list[Peer]] = {}
    for peer in peers:
        by_ip.setdefault(peer.ip, []).append(peer)
    sole: list[Peer] = []
    clashes: list[Clash] = []
    lost: list[Refused] = []
    for ip, given in sorted(by_ip.items()):
        hosts = tuple(sorted({p.host for p in given}))
        if len(hosts) == 1:
            sole += given
            continue
        owner = claims.get(ip)
        holder, since = (owner[0], owner[1]) if owner is not None else (None, 0)
        others = [p for p in given if p.host != holder]
        if holder in hosts and all(written(p) > since for p in others):
            sole += [p for p in given if p.host == holder]
            lost += [Refused(p.host, p.endpoint, f"address {ip} was already claimed by host {holder} "
                                                 "when this record was written") for p in others]
            continue
        clash = Clash("address", ip, hosts)
        clashes.append(clash)
        lost += [Refused(p.host, p.endpoint, _also(clash, p.host)) for p in given]
    return sole, clashes, lost


def _also(clash: Clash, host: str) -> str:
    others = ", ".join(h for h in clash.hosts if h != host)
    return f"{clash.what} {clash.value} is also given by host {others}"


def _is_v4(subnet: str) -> bool:
    try:
        return ipaddress.ip_network(subnet).version == 4
    except ValueError:
        return False


def _implausible(peer: Peer, member: Member | None, subnet: ipaddress.IPv4Network | None,
                 local: Local) -> str | None:
    """Why `peer` cannot be believed whatever the other records say, or None."""
    if member is None:
        return "its host has no member record of this overlay"
    ip = ipaddress.IPv4Address(peer.ip)
    if subnet is None or ip not in subnet:
        return f"address {ip} is outside the overlay's subnet {subnet}"
    if subnet.prefixlen < 31 and ip in (subnet.network_address, subnet.broadcast_address):
        return f"address {ip} is the network or broadcast address of {subnet}"
    if peer.vtep != member.vtep:
        return f"VTEP {peer.vtep} is not its host's member VTEP {member.vtep}"
    if peer.mac in local.macs:
        return f"MAC {peer.mac} is one of this host's endpoints'"
    if peer.ip in local.ips:
        return f"address {ip} is one of this host's endpoints'"
    return None


def _unclaimed(peer: Peer, claims: Mapping[str, Owner]) -> str | None:
    """Why the IPAM does not back `peer`'s address as its host's, or None."""
    owner = claims.get(peer.ip)
    if owner is None:
        return f"address {peer.ip} is not claimed in the overlay's pool"
    if owner[0] != peer.host:
        return f"address {peer.ip} is claimed by host {owner[0]}, not {peer.host}"
    return None


def _without_mac_clashes(peers: list[Peer]) -> tuple[list[Peer], list[Clash]]:
    """The peers whose MAC no other host gives, and the clashes."""
    by_mac: dict[str, set[str]] = {}
    for peer in peers:
        by_mac.setdefault(peer.mac, set()).add(peer.host)
    clashes = [Clash("MAC", mac, tuple(sorted(hosts))) for mac, hosts in sorted(by_mac.items()) if len(hosts) > 1]
    bad = {c.value for c in clashes}
    return [p for p in peers if p.mac not in bad], clashes


def local_overlays(host: str, networks: Iterable[NetworkRecord],
                   endpoints: Iterable[EndpointRecord]) -> dict[OverlayId, Local]:
    """This host's side of each overlay it has a network on, from its own records alone
    (a network being created counts: CreateNetwork programs its peers before it answers;
    one being deleted does not)."""
    nets = [n for n in networks if n.kind == "overlay" and n.state != DELETING
            and n.netns and n.vtep]
    eps = list(endpoints)
    vteps = frozenset(n.vtep for n in nets if n.vtep)
    found: dict[OverlayId, Local] = {}
    # A ready network first: if a stale attempt names the same overlay, the ready one wins.
    for net in sorted(nets, key=lambda n: n.state != READY):
        oid = overlay_of(net.subnets, net.address_space)
        if oid is None or oid in found:
            continue
        assert net.netns is not None and net.vtep is not None
        member = Member(host, net.id, net.vtep, net.netns, naming.vxlan(net.id))
        # The endpoints on this overlay's own bridge: entries in its namespace can only take
        # their traffic (another network's bridge, with its own MACs, is out of reach, and
        # its addresses and MACs may repeat this one's in another address space).
        mine = [ep for ep in eps if ep.network_id == net.id]
        macs = frozenset(ep.mac.lower() for ep in mine if ep.mac)
        ips = frozenset(str(ipaddress.ip_interface(a).ip) for ep in mine for a in ep.addresses)
        found[oid] = Local(member, vteps, macs, ips, net.state == READY, net.options.encrypted, net.vni)
    return found
