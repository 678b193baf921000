"""What of this host names an address: the composition roots' bridge between the leak check
(ipam_driver/leaks.py) and the network driver's records, which the two drivers may not
import from each other.

An address the leak check proved unused (Docker listed its pool's networks completely for
the whole grace, and not this address) is released only together with the endpoint record
naming it, its links and its rules: removed here as DeleteEndpoint removes them
(NetworkService.reclaim_endpoint, only if the record is still the one read). If that
cannot be done, the address stays claimed, so no record ever names a free address.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from driver.models import EndpointRecord
from driver.service import NetworkService
from ipam_driver.allocator import Address, Network

log = logging.getLogger(__name__)


class EndpointsNamingAddress:
    """ipam_driver.leaks.AddressUsers over a NetworkService. `refuse(endpoint)` says why an
    endpoint cannot be removed from where this runs (None: it can)."""

    def __init__(self, service: NetworkService,
                 refuse: Callable[[EndpointRecord], str | None] = lambda ep: None) -> None:
        self.service = service
        self.refuse = refuse

    def naming(self, space: str, pool: Network, ip: Address) -> list[EndpointRecord]:
        """This host's endpoint records that name ip, on a network of pool's address space."""
        found = []
        networks = {n.id: n for n in self.service.networks()}
        for ep in self.service.endpoints():
            if not any(ipaddress.ip_interface(a).ip == ip for a in ep.addresses):
                continue
            net = networks.get(ep.network_id)
            if net is not None and net.address_space not in ("", space):
                continue  # the same address in another space's pool: not this claim's
            found.append(ep)
        return found

    def release_users(self, space: str, pool: Network, ip: Address) -> bool:
        for ep in self.naming(space, pool, ip):
            why = self.refuse(ep)
            if why is not None:
                log.warning("keeping %s of pool %s/%s: endpoint %s on network %s names it and %s",
                            ip, space, pool, ep.id[:12], ep.network_id[:12], why)
                return False
            if not self.service.reclaim_endpoint(ep.network_id, ep.id, ep.attempt):
                return False  # changed since it was read: judged again next time
            log.warning("removed endpoint %s on network %s with its address %s: unknown to "
                        "Docker (a container removed while pynet was down)", ep.id[:12],
                        ep.network_id[:12], ip)
        return True
