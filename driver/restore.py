"""Plugin start: finish what a crash interrupted, then make the kernel match the records.

Docker never replays CreateNetwork, so after a crash or reboot pynet itself brings every
ready network back (each kind restores all of its networks at once, so it can also drop what
it installed for networks no longer recorded). A record that is not ready is the intent of a
create or a deletion that never finished: what it names is removed, and so is the record. A
link is removed only when a record names it as pynet's: one that merely looks like pynet's
(a pn- name) is someone else's, perhaps another pynet's.
"""
from __future__ import annotations

import logging

from . import naming
from .kinds.base import all_owned_links
from .models import READY
from .netlink.api import Netlink
from .service import NetworkService

log = logging.getLogger(__name__)


def restore(service: NetworkService, netlink: Netlink) -> None:
    ledger = service.ledger
    recorded = ledger.networks()
    ready = {n.id: n for n in recorded if n.state == READY}
    for net in recorded:
        if net.state != READY:
            log.warning("finishing network %s, interrupted while %s", net.id[:12], net.state)
            service.remove_network(net, list(ready.values()))
    by_network: dict[str, list] = {nid: [] for nid in ready}
    for ep in ledger.endpoints():
        if ep.network_id not in ready:
            log.warning("dropping endpoint %s: its network %s is gone", ep.id[:12], ep.network_id[:12])
            service.remove_endpoint(None, ep)
        elif ep.state != READY:
            log.warning("finishing endpoint %s, interrupted while %s", ep.id[:12], ep.state)
            service.remove_endpoint(ready[ep.network_id], ep)
        else:
            by_network[ep.network_id].append(ep)
    # Names whose record is gone: a deletion killed between its two steps by a pynet from
    # before they were one transaction (ledger.Ledger.forget_network).
    ledger.release_orphan_names()
    for type_name, kind in service.kinds.items():
        mine = [n for n in ready.values() if n.kind == type_name]
        kind.restore(mine, {n.id: by_network[n.id] for n in mine})
        for net in mine:
            ledger.ensure_names(net, by_network[net.id])
    # The set `pynet doctor` reports against too.
    owned = all_owned_links(service.kinds, ready.values(), by_network)
    for link in netlink.links():
        if naming.is_pynet_link(link.name) and link.name not in owned:
            log.warning("link %s is named like pynet's, but no record of this host names it: "
                        "left in place (remove it by hand if it is a leftover)", link.name)
    log.info("restored %d network(s)", len(ready))
