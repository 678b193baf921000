"""`pynet doctor`: the kernel against this host's records, each difference with its fix.

Links through the netlink adapter (driver/netlink), the firewall through its read-only
audit (driver/firewall/audit.py), overlay peers through the overlay's own desired-state
code (driver/kinds/overlay/admission.py, peers.py): store records it ignores, records of one host
speaking for another and clashes (two hosts giving one address or MAC) are differences too.
Only ready records are compared: one that is not ready
is an interrupted call that restore finishes.
"""
from __future__ import annotations

from functools import partial

from driver import naming
from driver.firewall.audit import RESTART, Difference, differences
from driver.models import READY, EndpointRecord, NetworkRecord
from driver.netlink.api import Netlink
from driver.kinds.overlay.admission import Local, admit, local_overlays
from driver.kinds.overlay.peers import desired, diff
from driver.kinds.overlay.registry import parse_views, peer_version
from driver.kinds.overlay.kind import overlay_id
from ipam_driver.claim_owners import ClaimOwners
from pynet_core.errors import PynetError
from pynet_core.store import keys

from .context import Context
from .render import OK, PROBLEMS

RECREATE = "restart pynet (systemctl restart pynet): restore re-creates the links of ready networks"


def _restart_container(ctx: Context, ep: EndpointRecord) -> str:
    name = ctx.docker_names.containers.get(ep.id)
    return f"docker restart {name}" if name else "restart the container of endpoint " + ep.id[:12]


def check_bridge(ctx: Context, nl: Netlink, net: NetworkRecord, eps: list[EndpointRecord]) -> list[Difference]:
    link = nl.link(net.bridge)
    out = []
    if link is None:
        out.append(Difference(f"bridge {net.bridge} of network {net.id[:12]} is missing", RECREATE))
    else:
        if link.kind != "bridge":
            out.append(Difference(f"{net.bridge} of network {net.id[:12]} is a {link.kind or 'device'}, "
                                  "not a bridge", f"remove {net.bridge}, then {RECREATE}"))
        if not link.up:
            out.append(Difference(f"bridge {net.bridge} is down", f"ip link set {net.bridge} up"))
        addresses = {str(a) for name, a in nl.local_addresses() if name == net.bridge}
        for gw in net.gateways:
            if gw not in addresses and not net.options.internal:
                out.append(Difference(f"bridge {net.bridge} lacks its gateway address {gw}",
                                      f"ip addr add {gw} dev {net.bridge}"))
    for ep in eps:
        if not ep.host_if:
            continue
        veth = nl.link(ep.host_if)
        if veth is None:
            out.append(Difference(f"veth {ep.host_if} of endpoint {ep.id[:12]} is missing",
                                  _restart_container(ctx, ep)))
        elif veth.master != net.bridge:
            out.append(Difference(f"veth {ep.host_if} is not a port of {net.bridge} "
                                  f"(master {veth.master or 'none'})",
                                  RECREATE if link is None else f"ip link set {ep.host_if} master {net.bridge}"))
        elif not veth.up:
            out.append(Difference(f"veth {ep.host_if} is down", f"ip link set {ep.host_if} up"))
    return out


def check_macvlan(nl: Netlink, net: NetworkRecord) -> list[Difference]:
    if net.lower and nl.link(net.lower) is None:
        fix = RECREATE if net.lower_created else f"bring back interface {net.lower} (pynet never makes it)"
        return [Difference(f"macvlan parent {net.lower} of network {net.id[:12]} is missing", fix)]
    return []


STORE_FIX = ("find which host wrote it (pynet networks / docker ps on that host) and correct or delete "
             "that key under pynet's prefix (consul kv delete); pynet ignores it meanwhile")
CLASH_FIX = ("find which host's container really has it (pynet networks on each host); remove the other "
             "container, or the stale record of a host that no longer has it")


def check_overlay(nl: Netlink, net: NetworkRecord, eps: list[EndpointRecord], views: dict,
                  host: str, local: dict | None = None, claims=None) -> list[Difference]:
    if not net.netns:
        return []
    try:
        inside = nl.within(net.netns)
    except PynetError:
        return [Difference(f"namespace {net.netns} of overlay {net.id[:12]} is missing", RECREATE)]
    out = []
    if inside.link(naming.OVERLAY_BRIDGE) is None:
        out.append(Difference(f"bridge {naming.OVERLAY_BRIDGE} in {net.netns} is missing", RECREATE))
    vx_name = naming.vxlan(net.id)
    vx = inside.vxlan(vx_name)
    if vx is None:
        return out + [Difference(f"VXLAN device {vx_name} in {net.netns} is missing", RECREATE)]
    if net.vni is not None and vx.vni != net.vni:
        out.append(Difference(f"VXLAN device {vx_name} carries VNI {vx.vni}, the record says {net.vni}",
                              RECREATE))
    for ep in eps:
        if ep.host_if and inside.link(ep.host_if) is None:
            out.append(Difference(f"veth {ep.host_if} of endpoint {ep.id[:12]} is missing in {net.netns}",
                                  "restart the container"))
    oid = overlay_id(net)
    view = views.get(oid)
    if view is None:
        return out
    mine = (local or {}).get(oid) or Local(None)
    owners = claims.owners(oid.space, oid.subnet) if claims is not None else None
    admitted = admit(view, host, mine, owners, written=partial(peer_version, view))
    out += [Difference(f"overlay {oid}: store record {key} is ignored: {reason}", STORE_FIX)
            for key, reason in sorted(view.rejected.items())]
    out += [Difference(f"overlay {oid}: {clash.what} {clash.value} is given by hosts "
                       f"{', '.join(clash.hosts)}: neither is programmed", CLASH_FIX)
            for clash in admitted.clashes]
    out += [Difference(f"overlay {oid}: {'member' if r.endpoint is None else 'endpoint ' + r.endpoint[:12]} "
                       f"of host {r.host} is not believed: {r.reason}", STORE_FIX)
            for r in admitted.refused if "is also given by" not in r.reason]
    if admitted.view.members.get(host) is not None:
        # Every member counted alive: a host the watcher has withdrawn shows up here as missing.
        changes = diff(desired(admitted.view, host, lambda h: True), inside.fdb_entries(vx_name),
                       inside.neighbours(naming.OVERLAY_BRIDGE))
        fix = "restart pynet, or wait for its overlay watcher (a host it judged dead is withdrawn)"
        out += [Difference(f"FDB entry missing on {vx_name}: {e.mac} -> {e.dst}", fix) for e in changes.fdb_add]
        out += [Difference(f"FDB entry of no peer on {vx_name}: {e.mac} -> {e.dst}", fix) for e in changes.fdb_remove]
        out += [Difference(f"neighbour entry missing in {net.netns}: {n.ip} at {n.mac}", fix)
                for n in changes.neigh_add]
        out += [Difference(f"neighbour entry of no peer in {net.netns}: {n.ip} at {n.mac}", fix)
                for n in changes.neigh_remove]
    return out


def doctor(ctx: Context, args) -> int:
    from driver.netlink.pyroute2_netlink import Pyroute2Netlink

    nl = Pyroute2Netlink()
    nets = [n for n in ctx.networks() if n.state == READY]
    eps = [e for e in ctx.endpoints() if e.state == READY]
    per_net = {n.id: [e for e in eps if e.network_id == n.id] for n in nets}
    overlays = any(n.options.type == "overlay" for n in nets)
    # Rejected records are reported below, as differences; not logged as the plugin does.
    views = parse_views(ctx.store.list(keys.overlay_all()), report=lambda *_: None) if overlays else {}
    local = local_overlays(ctx.host, ctx.networks(), ctx.endpoints()) if overlays else {}
    claims = ClaimOwners(ctx.store)
    found: list[Difference] = []
    for net in nets:
        if net.options.type == "bridge" and net.bridge:
            found += check_bridge(ctx, nl, net, per_net[net.id])
        elif net.options.type == "macvlan":
            found += check_macvlan(nl, net)
        elif net.options.type == "overlay":
            found += check_overlay(nl, net, per_net[net.id], views, ctx.host, local, claims)
    found += differences(nets, eps)
    named = {n.bridge for n in nets} | {n.lower for n in nets} | {e.host_if for e in eps} | \
        {e.peer_if for e in eps} | {naming.vxlan(n.id) for n in nets}
    strangers = sorted(l.name for l in nl.links() if naming.is_pynet_link(l.name) and l.name not in named)
    checked = {"networks": len(nets), "endpoints": len(eps)}
    if ctx.out.as_json:
        ctx.out.json({"host": ctx.host, "checked": checked,
                      "differences": [{"what": d.what, "fix": d.fix} for d in found],
                      "unrecorded_links": strangers})
        return PROBLEMS if found else OK
    out = ctx.out
    out.line(f"checked {len(nets)} networks and {len(eps)} endpoints of host {ctx.host} against the "
             "kernel (links, overlay peers, nft table inet pynet, iptables PYNET-FORWARD, sysctls)")
    if not found:
        out.line(out.paint("all fine: the kernel matches the records", "ok"))
    for d in found:
        out.line(out.paint(f"DIFFERENT {d.what}", "bad"))
        out.line(f"    fix: {d.fix}")
    if strangers:
        out.line(out.paint(f"note: {len(strangers)} link(s) named like pynet's that no record of this "
                           f"host names (another pynet's, or left by hand; pynet never removes them): "
                           f"{', '.join(strangers)}", "dim"))
    return PROBLEMS if found else OK
