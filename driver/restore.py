"""Plugin start: make the kernel and the firewall match the recorded state.

Docker never replays CreateNetwork, so after a crash or reboot pynet itself re-creates the
bridges of recorded networks, re-attaches surviving veths, and removes pynet-named links
and records that no network owns any more (leftovers of a call interrupted mid-way).
"""
from __future__ import annotations

import logging

from . import naming
from .netlink.api import Netlink
from .service import NetworkService

log = logging.getLogger(__name__)


def restore(service: NetworkService, netlink: Netlink, firewall) -> None:
    networks = {n.id: n for n in service.networks()}
    by_network: dict[str, list] = {nid: [] for nid in networks}
    for ep in service.endpoints():
        if ep.network_id in by_network:
            by_network[ep.network_id].append(ep)
        else:
            log.warning("dropping endpoint %s: its network %s is gone", ep.id[:12], ep.network_id[:12])
            service.delete_endpoint(ep.network_id, ep.id)
    owned: set[str] = set()
    for net in networks.values():
        kind = service.kinds[net.options.type]
        kind.restore_network(net, by_network[net.id])
        owned |= kind.owned_links(net, by_network[net.id])
    # Endpoints whose network exists get their published ports re-installed.
    firewall.sync(list(networks.values()), [ep for eps in by_network.values() for ep in eps])
    for link in netlink.links():
        if naming.is_pynet_link(link.name) and link.name not in owned:
            log.warning("removing orphaned link %s (no pynet network owns it)", link.name)
            netlink.remove_link(link.name)
    log.info("restored %d network(s)", len(networks))
