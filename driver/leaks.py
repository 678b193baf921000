"""Remove the networks and endpoints Docker abandoned: what a crash at the end of a create
leaves behind.

When pynet is killed after CreateNetwork (or CreateEndpoint) did its work but before the
answer reached Docker, Docker's plugin client retries the call with an empty body (it re-sends
a buffer the first attempt drained), gets a 400 and fails the command. libnetwork then rolls
back the IPAM side only: it never sends DeleteNetwork for a network whose create failed, nor
DeleteEndpoint for such an endpoint. The record would stay ready for good, with its bridge,
gateway address and firewall rules (the gateway's route shadowing the subnet when Docker gives
it to a new network, a custom bridge name taken for ever), or with its veth pair.

So now and then the driver compares its ready records with what its dockerd reports
(driver/docker_networks.py), and removes a record as DeleteNetwork/DeleteEndpoint would when
- the dockerd is provably this host's: one with this engine ID has listed one of this host's
  recorded networks (the proof is kept in the store, so it survives a restart; pynet pointed
  at another or an empty dockerd never removes anything);
- the dockerd listed its networks completely this round and lacks the network, or, for an
  endpoint, it read that network's endpoints and lacks the endpoint;
- it stayed so in every check for GRACE seconds (longer than Docker's ~30 s retry, and longer
  than a create takes to show in Docker's lists), and the record is still the attempt first
  seen.
When dockerd cannot be asked, nothing is removed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from pynet_core import docker_proof

from .models import READY

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DockerNetworks:
    """One complete read of a dockerd: its engine ID and, per network ID, the endpoint IDs
    of that network (None: that network could not be read, judge none of its endpoints)."""
    engine: str
    networks: dict[str, frozenset[str] | None]


class Reclaims(Protocol):
    def reclaim_network(self, nid: str, attempt: str) -> bool: ...

    def reclaim_endpoint(self, nid: str, eid: str, attempt: str) -> bool: ...


class NetworkLeakCheck:
    """The network driver's leak check: its records of networks and endpoints Docker abandoned.
    ipam_driver/leaks.py's AddressLeakCheck is the same idea for address claims and pools;
    both run on the same interval and grace (`--leak-check-interval`, `--leak-grace`)."""

    def __init__(self, service, docker: Callable[[], DockerNetworks | None], *, grace: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service  # NetworkService: records, and reclaim_* (the Delete* paths)
        self.docker = docker
        self.grace = grace
        self.clock = clock
        self._since: dict[tuple[str, ...], float] = {}

    def check_once(self) -> list[str]:
        """One comparison; returns what was removed ("network <id>", "endpoint <id>")."""
        # Records first, Docker second: a network Docker lists was recorded before it was
        # listed, so a fresh create is never judged from a read older than its record.
        nets = [n for n in self.service.networks() if n.state == READY]
        eps = [e for e in self.service.endpoints() if e.state == READY]
        view = self.docker()
        if view is None or not self._proven(view, {n.id for n in nets}):
            self._since = {}
            return []
        now, since, removed = self.clock(), {}, []
        suspects = [(("network", n.id, n.attempt), lambda n=n: self.service.reclaim_network(n.id, n.attempt))
                    for n in nets if n.id not in view.networks]
        for e in eps:
            known = view.networks.get(e.network_id)
            if known is not None and e.id not in known:
                suspects.append((("endpoint", e.network_id, e.id, e.attempt),
                                 lambda e=e: self.service.reclaim_endpoint(e.network_id, e.id, e.attempt)))
        for identity, reclaim in suspects:
            first = self._since.get(identity, now)
            if now - first < self.grace:
                since[identity] = first
            elif reclaim():
                removed.append(f"{identity[0]} {identity[-2]}")
                log.warning("removed %s %s: ready here but unknown to Docker for %.0f s (a create "
                            "whose answer a crash lost)", identity[0], identity[-2][:12], now - first)
        self._since = since
        return removed

    def _proven(self, view: DockerNetworks, recorded: set[str]) -> bool:
        return docker_proof.proven(self.service.store, self.service.host, view.engine,
                                   bool(recorded & set(view.networks)))
