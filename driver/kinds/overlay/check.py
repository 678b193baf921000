"""What `pynet doctor` compares for an overlay network (OverlayKind.check).

The kernel side: the network's namespace, its bridge and VXLAN device (with the recorded
VNI), and each endpoint's veth in there. The store side: the overlay's records as this host
believes them, by the watcher's own rules (admission.py, peers.py), so that doctor and the
watcher cannot disagree on what is right: records it ignores, records of one host speaking
for another and clashes (two hosts giving one address or MAC) are differences, and so is
every FDB or neighbour entry the device lacks or has beyond what is believed.
Reads only, from the kernel and the store.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from driver import naming
from driver.models import EndpointRecord, NetworkRecord
from driver.netlink.api import Netlink, NoSuchNamespace
from pynet_core.store import keys

from ..base import RECREATE, Difference
from .admission import Local, admit, local_overlays
from .claims import Owner
from .model import OverlayView, overlay_of
from .peers import desired, diff
from .registry import parse_views, parse_wireguard, peer_version
from .runtime import OverlayRuntime
from .tunnels import believe, tunnel_addresses

STORE_FIX = ("find which host wrote it (pynet networks / docker ps on that host) and correct or delete "
             "that key under pynet's prefix (consul kv delete); pynet ignores it meanwhile")
CLASH_FIX = ("find which host's container really has it (pynet networks on each host); remove the other "
             "container, or the stale record of a host that no longer has it")
PEERS_FIX = "restart pynet, or wait for its overlay watcher (a host it judged dead is withdrawn)"


def check_network(netlink: Netlink, runtime: OverlayRuntime, net: NetworkRecord,
                  endpoints: list[EndpointRecord]) -> list[Difference]:
    """The kernel's objects of the network, then (when its VXLAN device is there to compare
    with) its peers against the store."""
    if not net.netns:
        return []
    try:
        inside = netlink.within(net.netns)
    except NoSuchNamespace:
        return [Difference(f"namespace {net.netns} of overlay {net.id[:12]} is missing", RECREATE)]
    found, vxlan_there = _devices(inside, net, endpoints)
    return found + _store_side(inside, runtime, net) if vxlan_there else found


def _devices(inside: Netlink, net: NetworkRecord,
             endpoints: list[EndpointRecord]) -> tuple[list[Difference], bool]:
    """(the differences, whether the VXLAN device is there)."""
    found = []
    if inside.link(naming.OVERLAY_BRIDGE) is None:
        found.append(Difference(f"bridge {naming.OVERLAY_BRIDGE} in {net.netns} is missing", RECREATE))
    vx_name = naming.vxlan(net.id)
    vx = inside.vxlan(vx_name)
    if vx is None:
        return found + [Difference(f"VXLAN device {vx_name} in {net.netns} is missing", RECREATE)], False
    if net.vni is not None and vx.vni != net.vni:
        found.append(Difference(f"VXLAN device {vx_name} carries VNI {vx.vni}, the record says {net.vni}",
                                RECREATE))
    for ep in endpoints:
        if ep.host_if and inside.link(ep.host_if) is None:
            found.append(Difference(f"veth {ep.host_if} of endpoint {ep.id[:12]} is missing in {net.netns}",
                                    "restart the container"))
    return found, True


def _store_side(inside: Netlink, runtime: OverlayRuntime, net: NetworkRecord) -> list[Difference]:
    oid = overlay_of(net.subnets, net.address_space)
    # Rejected records are reported here, as differences; not logged as the plugin does.
    entries = runtime.registry.store.list(keys.overlay_all())
    views = parse_views(entries, report=lambda *_: None)
    view = views.get(oid) if oid is not None else None
    if view is None:
        return []
    via = None
    found: list[Difference] = []
    if net.options.encrypted:
        via, found = _tunnels(entries, runtime)
    # What the watcher reads besides the records (wired by the composition root).
    records, claims = runtime.watcher.records, runtime.watcher.claims
    local = local_overlays(runtime.host, records.networks(), records.endpoints()) \
        if records is not None else {}
    owners = claims.owners(oid.space, oid.subnet) if claims is not None else None
    return found + _peers(inside, view, runtime.host, local.get(oid) or Local(None), owners,
                          naming.vxlan(net.id), net.netns or "", via)


def _tunnels(entries, runtime: OverlayRuntime) -> tuple[dict[str, str], list[Difference]]:
    """An encrypted overlay's entries point at tunnel addresses: those of the other hosts'
    WireGuard records this host believes (tunnels.py), judged against its own record."""
    wg_view = parse_wireguard(entries, report=lambda *_: None)
    mine = wg_view.hosts.get(runtime.host)
    found = [Difference(f"encrypted overlays: store record {key} is ignored", STORE_FIX)
             for key in sorted(set(e.key for e in entries if keys.wireguard_host_of(e.key) is not None
                                   or e.key.startswith(keys.overlay_tunnels())) - set(wg_view.versions))]
    if mine is None:
        found.append(Difference(f"encrypted overlays: host {runtime.host} has no WireGuard record in the "
                                "store (its link was not made, or its record was deleted)", PEERS_FIX))
        return {}, found
    claims = {address: claim.host for address, claim in wg_view.claims.items()}
    believed = believe(wg_view.hosts, claims, runtime.host, runtime.settings.wireguard_subnet, mine)
    found += [Difference(f"encrypted overlays: the WireGuard record of host {r.host} is not believed: "
                         f"{r.reason}", STORE_FIX) for r in believed.refused]
    return tunnel_addresses(believed), found


def _peers(inside: Netlink, view: OverlayView, host: str, mine: Local,
           owners: Mapping[str, Owner] | None, vx_name: str, netns: str,
           via: dict[str, str] | None = None) -> list[Difference]:
    """The store's records of one overlay as this host judges them, and the entries of its
    VXLAN device (`vx_name`, in `netns`) against those it should have."""
    oid = view.id
    admitted = admit(view, host, mine, owners, written=partial(peer_version, view))
    found = [Difference(f"overlay {oid}: store record {key} is ignored: {reason}", STORE_FIX)
             for key, reason in sorted(view.rejected.items())]
    found += [Difference(f"overlay {oid}: {clash.what} {clash.value} is given by hosts "
                         f"{', '.join(clash.hosts)}: neither is programmed", CLASH_FIX)
              for clash in admitted.clashes]
    found += [Difference(f"overlay {oid}: {'member' if r.endpoint is None else 'endpoint ' + r.endpoint[:12]} "
                         f"of host {r.host} is not believed: {r.reason}", STORE_FIX)
              for r in admitted.refused if "is also given by" not in r.reason]
    if admitted.view.members.get(host) is None:
        return found
    # Every member counted alive: a host the watcher has withdrawn shows up here as missing.
    changes = diff(desired(admitted.view, host, lambda h: True, via), inside.fdb_entries(vx_name),
                   inside.neighbours(naming.OVERLAY_BRIDGE))
    found += [Difference(f"FDB entry missing on {vx_name}: {e.mac} -> {e.dst}", PEERS_FIX)
              for e in changes.fdb_add]
    found += [Difference(f"FDB entry of no peer on {vx_name}: {e.mac} -> {e.dst}", PEERS_FIX)
              for e in changes.fdb_remove]
    found += [Difference(f"neighbour entry missing in {netns}: {n.ip} at {n.mac}", PEERS_FIX)
              for n in changes.neigh_add]
    found += [Difference(f"neighbour entry of no peer in {netns}: {n.ip} at {n.mac}", PEERS_FIX)
              for n in changes.neigh_remove]
    return found
