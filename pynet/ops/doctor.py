"""`pynet doctor`: the kernel against this host's records, each difference with its fix.

Each network is checked by its kind (driver/kinds: the links it made, and for an overlay
its peers against the store); the firewall through its read-only audit
(driver/firewall/audit.py); links named like pynet's that no record accounts for by the
kinds' owned_links, the set restore uses. Only ready records are compared: one that is not
ready is an interrupted call that restore finishes.
"""
from __future__ import annotations

from driver import naming
from driver.firewall.audit import Difference, differences
from driver.kinds.base import all_owned_links
from driver.models import READY

from .context import Context
from .render import OK, PROBLEMS


def doctor(ctx: Context, args) -> int:
    nets = [n for n in ctx.networks() if n.state == READY]
    eps = [e for e in ctx.endpoints() if e.state == READY]
    per_net = {n.id: [e for e in eps if e.network_id == n.id] for n in nets}
    found: list[Difference] = []
    for net in nets:
        # dockerd is asked for names only when a fix names a container.
        found += ctx.kind(net).check(net, per_net[net.id], lambda eid: ctx.docker_names.containers.get(eid))
    found += differences(nets, eps)
    found += encrypted_differences(ctx, nets)
    owned = all_owned_links(ctx.kinds, nets, per_net)
    strangers = sorted(link.name for link in ctx.netlink.links()
                       if naming.is_pynet_link(link.name) and link.name not in owned)
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


RESTART_FIX = "restart pynet: restore makes the WireGuard link and its firewall table again"


def encrypted_differences(ctx: Context, nets, link_status=None, guard_text=None) -> list[Difference]:
    """Encrypted overlays: this host's WireGuard link and the guard table (the nft table that
    keeps underlay frames off their VXLAN port) are there while one is, and gone after."""
    encrypted = [n for n in nets if getattr(n.options, "encrypted", False)]
    if link_status is None:
        from .status import wireguard_choice, wireguard_link
        link_status = lambda: wireguard_link(wireguard_choice(ctx.settings)["mode"])  # noqa: E731
    if guard_text is None:
        from driver.firewall.wireguard_guard import WireGuardGuard
        guard_text = lambda: WireGuardGuard().text()  # noqa: E731
    link = link_status()
    found = []
    try:
        guarded = bool(guard_text().strip())
    except Exception as exc:  # libnftables missing or refusing: say so, check the rest
        guarded = False
        if encrypted:
            found.append(Difference(f"nft table inet pynet_wireguard cannot be read: "
                                    f"{getattr(exc, 'message', exc)}", "check nftables (pynet doctor as root)"))
    guard_unknown = bool(found)
    if encrypted and link.get("error"):
        found.append(Difference(f"WireGuard link {link['name']} of {len(encrypted)} encrypted overlay(s): "
                                f"{link['error']}", RESTART_FIX))
    elif encrypted and not link["present"]:
        found.append(Difference(f"WireGuard link {link['name']} of {len(encrypted)} encrypted overlay(s) is "
                                "missing: their traffic between hosts stops", RESTART_FIX))
    if encrypted and not guarded and not guard_unknown:
        found.append(Difference("nft table inet pynet_wireguard is missing: frames sent from the underlay "
                                "to the encrypted overlays' VXLAN port reach their containers", RESTART_FIX))
    if not encrypted and link["present"]:
        found.append(Difference(f"WireGuard link {link['name']} is up but no encrypted overlay is on this "
                                "host", "restart pynet, or delete the link by hand"))
    return found
