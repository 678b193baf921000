"""Give back what Docker no longer uses: the address claims, pool holds and gateway holds a
crash leaves behind.

Docker sends ReleaseAddress and ReleasePool once and ignores a failure. If pynet is down at
that moment (killed between Docker's RequestAddress and CreateEndpoint, or during a
`docker network rm`), nothing would ever free the claim. Docker itself knows which networks
and addresses it uses, so this host's claims are compared with what a dockerd reports
(docker_addresses.DockerView) -- but only with evidence that is there, never with evidence
that is merely absent:

- The dockerd must be provably this host's: it knows at least one pool this host holds,
  through a network with pynet as its IPAM driver, or it has the engine ID of a dockerd that
  once did (pynet_core/docker_proof.py). A dockerd that knows none (pynet pointed
  at the wrong or an empty dockerd, or one just reset) releases nothing, and the log says
  so, once per change, naming the dockerd.
- An address claim of a pool this host holds is judged only against a pynet network on
  that pool whose container list was read completely this round: "unknown to Docker" means
  "Docker knows this network and not this address".
- A pool hold is judged leaked only when no network of that dockerd (whatever its drivers)
  lists or overlaps the pool, and none could not be read. Reclaiming it takes every hold of
  this host on the pool, with its claims there (gateway hold included).
- A claim of this host on a pool it no longer holds (a ReleaseAddress lost after the
  ReleasePool went through; a gateway this host still holds) follows the pool rule.

An address is released together with what of this host names it, or not at all: before a
claim goes, `users` (the composition root's, over the network driver, which this package
never imports) removes the endpoint record naming the address, with its links and rules, as
DeleteEndpoint would; if it cannot, the claim stays. Otherwise the address would be free for
a new container while a record still names it (`pynet ipam check`: "unclaimed ... of
endpoint ...").

Swarm's claims are never judged: on a dockerd in a swarm (or whose swarm state is unknown),
pools and addresses in the global address space (GLOBAL_SPACE) are a Swarm manager's
allocations for tasks, VIPs and load-balancer addresses on every node of the cluster (a
global-scope driver's networks; docs/swarm.md). This host's dockerd sees only its own node's
containers, and not at all the allocations a former leader's pynet made, so its silence about
them proves nothing. Swarm gives them back with ReleaseAddress and ReleasePool; the nodes'
own claims for the same tasks are in the local space and judged as usual. Only a dockerd
that says it is in no swarm has its global-space networks (a global-scope plugin outside
Swarm) judged like local ones.

And for everything: it stayed so in every check for at least GRACE seconds (longer than
Docker's own retry window, so a CreateEndpoint that reaches pynet late still finds its
address claimed), and the release only touches exactly what was first seen (claim id and
store version; the pool's hold ids of this host), so anything made again meanwhile is
never touched. When dockerd cannot be asked, nothing is released.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Protocol

from pynet_core import docker_proof
from pynet_core.defaults import DEFAULT_LEAK_GRACE
from pynet_core.errors import BadRecord
from pynet_core.store import bad_records, keys
from pynet_core.store.api import Entry, Store

from . import models
from .allocator import Address, Network
from .docker_addresses import DockerView
from .models import AddressClaim, AddressSpace, claim_key
from .pools import GLOBAL_SPACE

log = logging.getLogger(__name__)

SPACES_PREFIX = keys.ipam_space("")


class AddressUsers(Protocol):
    def release_users(self, space: str, pool: Network, ip: Address) -> bool:
        """Remove what of this host names ip of pool (an endpoint record with its kernel
        objects), as its Delete call would; True once nothing names it (or nothing did).
        Called only for an address proven unused (the rules above)."""


class Releases(Protocol):
    def release_leaked(self, entry: Entry) -> bool: ...

    def release_leaked_pool(self, space: str, pool: Network, holds: frozenset[str],
                            unnamed: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Suspect:
    identity: Hashable  # the thing exactly as first seen
    since: float


class AddressLeakCheck:
    """The IPAM driver's leak check (driver/leaks.py's NetworkLeakCheck is the network
    driver's): claims and holds Docker no longer uses, released only on proof."""

    def __init__(self, store: Store, host: str, docker: Callable[[], DockerView | None],
                 ipam: Releases, *, grace: float = DEFAULT_LEAK_GRACE,
                 clock: Callable[[], float] = time.monotonic,
                 judged_space: Callable[[str], bool] = lambda space: True,
                 users: AddressUsers | None = None) -> None:
        self.store = store
        self.host = host
        self.docker = docker
        self.ipam = ipam
        self.grace = grace
        self.clock = clock
        self._suspects: dict[str, _Suspect] = {}
        self._next: dict[str, _Suspect] = {}
        self._proven: bool | None = None  # last state logged
        # Which address spaces this dockerd's word counts for (`pynet ipam check` leaves
        # swarm-scope claims, made by a Swarm manager for any node, out of it).
        self.judged_space = judged_space
        self.users = users
        self.last_view: DockerView | None = None

    @property
    def proven(self) -> bool:
        """Whether the last check found its dockerd provably this host's."""
        return bool(self._proven)

    def suspects(self) -> list[str]:
        """What the last check found unused and waits out the grace for: address claim
        keys and 'pool SPACE/CIDR'."""
        return sorted(self._suspects)

    def check_once(self) -> list[str]:
        """One comparison; returns what was released (address claim keys, 'pool SPACE/CIDR')."""
        # The store first, Docker second: whatever Docker reports was claimed before it was
        # reported, so a claim listed here cannot be missed for a container Docker lists.
        claims = self.store.list(keys.ipam_addrs_all())
        held = self._held_pools()
        view = self.docker()
        self.last_view = view
        if view is None:
            return []  # no word from Docker: no judgement
        if not held:
            self._suspects = {}
            return []  # no pool of this host to prove the dockerd by: no judgement
        held = {k: v for k, v in held.items() if self._judges(k[0], view)}
        if not held:
            return []
        if not self._is_this_hosts(view, held):
            self._suspects = {}
            return []
        self._next = {}
        released: list[str] = []
        pools_released: set[tuple[str, str]] = set()
        for (space, pool), (holds, unnamed) in sorted(held.items(), key=str):
            if view.knows(pool):
                continue
            if self._overdue(f"pool {space}/{pool}", (holds, unnamed)) and \
                    self.ipam.release_leaked_pool(space, pool, holds, unnamed):
                released.append(f"pool {space}/{pool}")
                pools_released.add((space, str(pool)))
                log.warning("released pool %s/%s held by this host (%s): no network of dockerd "
                            "at %s has used it for %.0f s (a ReleasePool Docker sent while pynet "
                            "was down)", space, pool, self.host, view.docker_host, self.grace)
        for entry in claims:
            try:
                space, pool, ip = claim_key(entry)
            except BadRecord as exc:
                bad_records.skipped(entry, exc.reason, "address claim")
                continue
            if not self._judges(space, view):
                continue  # Swarm's allocation (module docstring), or left out by the caller
            claim = self._own(entry)
            if claim is None:
                continue
            if (space, str(pool)) in pools_released:
                continue  # went with its pool
            if (space, pool) in held:
                if claim.gateway or not view.judges(pool) or ip in view.in_use:
                    continue  # a gateway goes with its pool; no evidence; or in use
            elif view.knows(pool):
                continue
            if self._overdue(entry.key, (claim.claim or "", entry.version)) and \
                    self._users_released(space, pool, ip) and self.ipam.release_leaked(entry):
                released.append(entry.key)
                log.warning("released %s %s: claimed by this host (%s) but unknown to dockerd at "
                            "%s for %.0f s (a release Docker sent while pynet was down)",
                            claim.kind, keys.claimed_address(entry.key), self.host,
                            view.docker_host, self.grace)
        self._suspects = self._next
        return released

    def _users_released(self, space: str, pool: Network, ip: Address) -> bool:
        """Whether nothing of this host names ip any more (its users removed first)."""
        if self.users is None:
            return True
        try:
            return self.users.release_users(space, pool, ip)
        except Exception as exc:  # noqa: BLE001 - one address must not stop the check
            log.error("keeping %s of pool %s/%s: removing the endpoint that names it failed: %s",
                      ip, space, pool, exc)
            return False

    def _judges(self, space: str, view: DockerView) -> bool:
        """Whether this dockerd's word counts for claims in `space`: not for the global space
        on a dockerd in a swarm (a manager allocates there for tasks on every node)."""
        if space == GLOBAL_SPACE and not view.outside_swarm:
            return False
        return self.judged_space(space)

    def _overdue(self, what: str, identity: Hashable) -> bool:
        """Note `what` as unused now; True once it has been so, unchanged, for the grace."""
        now = self.clock()
        seen = self._suspects.get(what)
        since = seen.since if seen is not None and seen.identity == identity else now
        if now - since >= self.grace:
            return True
        self._next[what] = _Suspect(identity, since)
        return False

    def _is_this_hosts(self, view: DockerView, held: dict) -> bool:
        # Or a dockerd with the engine ID once seen knowing them: a pool a crash leaked after
        # the last pynet network went would otherwise never be judged, its subnet taken for good.
        proven = docker_proof.proven(self.store, self.host, view.engine,
                                     view.knows_pynet_pool(pool for _, pool in held))
        if proven != self._proven:
            if proven:
                log.info("leak check: dockerd at %s knows this host's (%s) pynet pools; "
                         "checking for leaks", view.docker_host, self.host)
            else:
                log.warning("leak check: dockerd at %s knows none of the %d pynet pools this host "
                            "(%s) holds: it may not be the dockerd using pynet here (see "
                            "--docker-host); nothing is released until it does",
                            view.docker_host, len(held), self.host)
            self._proven = proven
        return proven

    def held_pools(self) -> dict[tuple[str, Network], tuple[frozenset[str], int]]:
        return self._held_pools()

    def _held_pools(self) -> dict[tuple[str, Network], tuple[frozenset[str], int]]:
        """(space, pool) -> (this host's hold ids, its holds without an id), for every pool
        this host holds."""
        held = {}
        for entry in self.store.list(SPACES_PREFIX):
            space = entry.key[len(SPACES_PREFIX):]
            if not self.judged_space(space):
                continue
            try:
                record = models.decode(AddressSpace, entry)
            except BadRecord as exc:
                bad_records.skipped(entry, exc.reason, "address space")
                continue
            for pool, pool_entry in record.pools.items():
                if pool_entry.held_by(self.host):
                    held[(space, pool)] = (pool_entry.hold_ids(self.host),
                                           pool_entry.unnamed_holds(self.host))
        return held

    def _own(self, entry: Entry) -> AddressClaim | None:
        try:
            claim = models.decode(AddressClaim, entry)
        except BadRecord as exc:
            bad_records.skipped(entry, exc.reason, "address claim")
            return None
        mine = self.host in (claim.holders or ()) if claim.gateway else claim.host == self.host
        return claim if mine else None
