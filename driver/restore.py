"""Plugin start: make the kernel and the firewall match the recorded state.

Docker never replays CreateNetwork, so after a crash or reboot pynet itself brings every
recorded network back (each kind restores all of its networks at once, so it can also drop
what it installed for networks no longer recorded), and removes pynet-named links and
records that no network owns any more (leftovers of a call interrupted mid-way).
"""
from __future__ import annotations

import logging

from . import naming
from .netlink.api import Netlink
from .protocol import EndpointCall
from .service import NetworkService

log = logging.getLogger(__name__)


def restore(service: NetworkService, netlink: Netlink) -> None:
    networks = {n.id: n for n in service.networks()}
    by_network: dict[str, list] = {nid: [] for nid in networks}
    for ep in service.endpoints():
        if ep.network_id in by_network:
            by_network[ep.network_id].append(ep)
        else:
            log.warning("dropping endpoint %s: its network %s is gone", ep.id[:12], ep.network_id[:12])
            service.delete_endpoint(EndpointCall(ep.network_id, ep.id))
    owned: set[str] = set()
    for type_name, kind in service.kinds.items():
        mine = [n for n in networks.values() if n.options.type == type_name]
        kind.restore(mine, {n.id: by_network[n.id] for n in mine})
        for net in mine:
            owned |= kind.owned_links(net, by_network[net.id])
    for link in netlink.links():
        if naming.is_pynet_link(link.name) and link.name not in owned:
            log.warning("removing orphaned link %s (no pynet network owns it)", link.name)
            netlink.remove_link(link.name)
    log.info("restored %d network(s)", len(networks))
