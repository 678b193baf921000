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
from .store import keys

log = logging.getLogger(__name__)


def restore(service: NetworkService, netlink: Netlink, firewall) -> None:
    networks = {n.id: n for n in service.networks()}
    owned: set[str] = set()
    kept = []  # endpoints whose network exists: their published ports are re-installed
    for ep in service.endpoints():
        if ep.network_id not in networks:
            log.warning("dropping endpoint %s: its network %s is gone", ep.id[:12], ep.network_id[:12])
            service.store.delete(keys.endpoint(service.host, ep.network_id, ep.id))
            netlink.remove_link(ep.host_if)
    for net in networks.values():
        kind = service.kinds[net.options.type]
        endpoints = service.endpoints(net.id)
        kept += endpoints
        kind.restore_network(net, endpoints)
        owned |= kind.owned_links(net, endpoints)
    # macvlan networks have no firewall rules: their traffic never crosses the host's stack.
    firewall.sync([n for n in networks.values() if n.options.type != "macvlan"], kept)
    for link in netlink.links():
        if naming.is_pynet_link(link.name) and link.name not in owned:
            log.warning("removing orphaned link %s (no pynet network owns it)", link.name)
            netlink.remove_link(link.name)
    log.info("restored %d network(s)", len(networks))
