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
