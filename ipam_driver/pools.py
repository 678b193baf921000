"""Pools: one CAS'd AddressSpace record per address space, each hold of a pool named.

Explicit pools are shared by every host that asks for the same definition; a host may hold
a LocalDefault pool once (a second network on the same subnet overlaps). Automatic pools
never overlap another pool or a host route.

Every RequestPool makes one hold with its own id, written in the PoolID Docker keeps
(pool_id.py). The write is fenced (pynet_core/store/fenced.py): when the store does not answer
it may still land later, and the settle then removes exactly that hold, so a host never
keeps a subnet for a network Docker never got. ReleasePool removes the hold its PoolID
names, so a release repeated after a timeout (whose first try landed) removes nothing more.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from pynet_core.defaults import DefaultPool
from pynet_core.errors import BackendUnavailable, BadRequest, Exhausted, NotFound, StoreContention
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import keys, records
from pynet_core.store.segments import segment_problem
from pynet_core.wire import printable
from pynet_core.store.api import Op, Store
from pynet_core.store.fenced import FencedWrites, claim_id

from . import allocator, models
from .allocator import Network
from .hostblocks import HostBlocks
from .models import AddressClaim, AddressSpace, PoolEntry
from .options import check_pool_options, pool_block_size
from .pool_id import PoolId
from .protocol import PoolRequest

log = logging.getLogger(__name__)

LOCAL_SPACE = "LocalDefault"
GLOBAL_SPACE = "GlobalDefault"
SPACES = (LOCAL_SPACE, GLOBAL_SPACE)
POOL_TTL = 5.0  # seconds a held pool's record is trusted without reading it again
# The largest pool pynet accepts: a pool overlapping everything (0.0.0.0/0) would refuse
# every later pool. /8 is the largest block IPv4 ever assigned to one user; /48 is an IPv6
# end site's whole allocation (RFC 6177), far more than one network can use.
MIN_PREFIX = {4: 8, 6: 48}


class Pools:
    def __init__(self, store: Store, host: str, default_pools: tuple[DefaultPool, ...],
                 host_routes: Callable[[], list[Network]], block_size: int,
                 blocks: HostBlocks, retries: RetryQueue, writes: FencedWrites) -> None:
        self.store = store
        self.host = host
        self.default_pools = default_pools
        self.host_routes = host_routes
        self.block_size = block_size
        self._blocks = blocks
        self._retries = retries
        self._writes = writes
        # Pools this host holds, as last read: a pool cannot go away while this host holds
        # it, so RequestAddress need not read the pool record every time (POOL_TTL).
        self._held: dict[tuple[str, Network], tuple[PoolEntry, float]] = {}

    # --- RequestPool -------------------------------------------------------------------
    def request(self, req: PoolRequest) -> PoolId:
        space = req.space or LOCAL_SPACE
        if space not in SPACES:
            # Only Docker's two names: a space is a store key level (never '/' or '..').
            problem = segment_problem(space)
            raise BadRequest(f"unknown address space {printable(space)}: "
                             + (f"not a valid name ({problem}); " if problem else "")
                             + f"pynet serves {', '.join(SPACES)}")
        check_pool_options(req.options)
        block = pool_block_size(req.options, self.block_size)
        wanted, sub = req.pool, req.subpool
        if wanted is not None:
            if (wanted.version == 6) != req.v6:
                raise BadRequest(f"subnet {wanted} is IPv{wanted.version} but Docker asked for an "
                                 f"IPv{6 if req.v6 else 4} pool")
            if wanted.prefixlen < MIN_PREFIX[wanted.version]:
                raise BadRequest(f"subnet {wanted} is too large: pynet accepts IPv{wanted.version} "
                                 f"pools of /{MIN_PREFIX[wanted.version]} or smaller, so that one "
                                 "pool cannot overlap every other")
            if sub is not None and (sub.version != wanted.version or not sub.subnet_of(wanted)):
                raise BadRequest(f"IP range {sub} is not inside subnet {wanted}")

        hold = claim_id()
        key = keys.ipam_space(space)
        for _ in range(records.MAX_ATTEMPTS):
            entry = self.store.get(key)
            current = AddressSpace({}) if entry is None else models.decode(AddressSpace, entry)
            chosen = wanted or self._automatic(current, 6 if req.v6 else 4)
            held = current.holding(chosen, sub, self.host, block,
                                   exclusive=space == LOCAL_SPACE, hold=hold)
            new = models.encode(held)
            op = (Op("create", key, new) if entry is None
                  else Op("cas", key, new, entry.version))
            pool_id = PoolId(space, chosen, sub, hold)
            # A late landing is undone by releasing exactly this hold (idempotent).
            settle = functools.partial(self._settle_hold, pool_id)
            if self._writes.transaction([op], settle, f"hold {pool_id}"):
                models.remember(key, new, held)  # the next read of this text needs no decode
                return pool_id
        raise StoreContention(f"gave up requesting a pool: {records.MAX_ATTEMPTS} concurrent "
                              f"writers changed {key} first")

    def _settle_hold(self, pool_id: PoolId, store: Store) -> None:
        if self._drop(pool_id, None, settling=True):
            log.warning("released pool hold %s: its RequestPool failed but landed late", pool_id)

    def _automatic(self, current: AddressSpace, version: int) -> Network:
        taken = list(current.pools)
        taken += [r for r in self.host_routes() if r.prefixlen > 0]
        candidates = [p for p in self.default_pools if p.base.version == version]
        for default in candidates:
            subnet = allocator.next_free_subnet(default.base, default.size, taken)
            if subnet is not None:
                return subnet
        bases = ", ".join(f"{p.base} (/{p.size})" for p in candidates) or "none configured"
        raise Exhausted(f"no free IPv{version} subnet left in the default address pools [{bases}]: "
                        "every one is in use or overlaps a host route; pass --subnet or add a "
                        "pool with --default-address-pool")

    # --- ReleasePool -------------------------------------------------------------------
    def release(self, pool_id: PoolId) -> None:
        """Drop the hold the PoolID names; the last hold deletes the pool and its addresses.
        Idempotent for every PoolID with a hold id. Docker ignores a failure here, so with
        the store unreachable it is also queued."""
        try:
            self._drop(pool_id, None)
        except BackendUnavailable:
            self._retries.add(f"releasing pool {pool_id} held by {self.host}",
                              functools.partial(self._drop, pool_id, None))
            raise

    def release_leaked(self, space: str, pool: Network, holds: frozenset[str],
                       unnamed: int) -> bool:
        """Drop every hold of this host on pool, only if they are exactly `holds` and
        `unnamed` (as the leak check first saw them); then this host's claims on the pool
        go too: nothing of this host uses the pool any more (leaks.py proved it)."""
        return self._drop(PoolId(space, pool), (holds, unnamed))

    def _drop(self, pool_id: PoolId, leaked: tuple[frozenset[str], int] | None,
              settling: bool = False) -> bool:
        """Release pool_id's hold (leaked: all of this host's, if as expected). Returns
        whether a hold went. settling: pool_id is this host's own write, named by its hold
        id alone, so it is not checked as client input (a settle must never fail)."""
        pool = pool_id.pool
        self._held.pop((pool_id.space, pool), None)
        dropped = [False]

        def drop(current: AddressSpace | None) -> AddressSpace | None:
            dropped[0] = False
            if current is None or pool not in current.pools:
                return current  # already released: a replay
            entry = current.pools[pool]
            if leaked is not None:
                if (entry.hold_ids(self.host), entry.unnamed_holds(self.host)) != leaked:
                    return current  # changed since the leak check saw it: not ours to judge
                left: PoolEntry | None = entry
                for hold in leaked[0]:
                    left = left and left.without_hold(hold)
                for _ in range(leaked[1]):
                    left = left and left.without_unnamed_hold(self.host)
                pools = {n: e for n, e in current.pools.items() if n != pool}
                if left is not None:
                    pools[pool] = left
                dropped[0] = True
                return AddressSpace(pools)
            if settling:
                if pool_id.hold not in (entry.holds or {}):
                    return current  # it never landed
            else:
                self._check_range(pool_id, entry)
            owner = (entry.holds or {}).get(pool_id.hold or "")
            if owner is not None and owner != self.host:
                raise BadRequest(f"PoolID {pool_id} names a hold of host {owner}, not of this "
                                 f"host ({self.host})")
            after = current.releasing(pool, pool_id.hold, self.host)
            dropped[0] = after.pools.get(pool) != entry
            return after

        result = models.update(self.store, keys.ipam_space(pool_id.space), AddressSpace, drop,
                               "releasing a pool")
        left = None if result is None else result.pools.get(pool)
        if left is None:
            self._delete_contents(pool_id)
        elif not left.held_by(self.host):
            if leaked is not None and dropped[0]:
                self._drop_own_claims(pool_id)
            self._blocks.give_back_all(pool_id)
        return dropped[0]

    @staticmethod
    def _check_range(pool_id: PoolId, entry: PoolEntry) -> None:
        """A PoolID is client input: the range it names must be the pool's recorded one,
        or a forged PoolID would allocate outside the pool."""
        if pool_id.subpool != entry.subpool:
            raise BadRequest(f"PoolID {pool_id} names IP range {pool_id.subpool or 'the whole subnet'}"
                             f" but pool {pool_id.pool} is defined with "
                             f"{entry.subpool or 'the whole subnet'}")

    def _delete_contents(self, pool_id: PoolId) -> None:
        """The pool is gone: delete its address and block claims. Only when it is still
        gone after they were listed, so a pool made again meanwhile keeps its new claims."""
        self._blocks.forget(pool_id)
        cidr = str(pool_id.pool)
        listed = [e for prefix in (keys.ipam_addrs(pool_id.space, cidr),
                                   keys.ipam_blocks(pool_id.space, cidr))
                  for e in self.store.list(prefix)]
        space = models.read(self.store, keys.ipam_space(pool_id.space), AddressSpace)
        if space is not None and pool_id.pool in space.pools:
            return
        for entry in listed:
            self.store.delete(entry.key, entry.version)

    def _drop_own_claims(self, pool_id: PoolId) -> None:
        """This host's claims on a pool it no longer holds, which other hosts still do: its
        addresses, and its name among the gateway's holders."""
        # A bad record is skipped: not readable, so not provably this host's.
        for entry, claim in models.readable(self.store.list(keys.ipam_addrs(pool_id.space, str(pool_id.pool))),
                                            AddressClaim, "address claim"):
            if claim.gateway and self.host in (claim.holders or ()):
                rest = claim.freed_by(self.host)
                if rest is None:
                    self.store.delete(entry.key, entry.version)
                else:
                    self.store.cas(entry.key, models.encode(rest), entry.version)
            elif not claim.gateway and claim.host == self.host:
                self.store.delete(entry.key, entry.version)

    # --- lookups -----------------------------------------------------------------------
    def held_here(self, space: str, pool: Network) -> bool:
        """Whether this host holds `pool` in `space`: Docker asked this pynet for it
        (RequestPool), so it did not come from another IPAM driver."""
        current = models.read(self.store, keys.ipam_space(space), AddressSpace)
        entry = current.pools.get(pool) if current is not None else None
        return entry is not None and entry.holders.get(self.host, 0) > 0

    def entry(self, pool_id: PoolId) -> PoolEntry:
        """The pool's record, checked against what the PoolID claims; NotFound if it is not
        allocated, BadRequest if the PoolID names another range."""
        key = (pool_id.space, pool_id.pool)
        held = self._held.get(key)
        if held is not None and time.monotonic() - held[1] < POOL_TTL:
            entry = held[0]
        else:
            space = models.read(self.store, keys.ipam_space(pool_id.space), AddressSpace)
            found = None if space is None else space.pools.get(pool_id.pool)
            if found is None:
                raise NotFound(f"pool {pool_id} is not allocated (it was released, or never "
                               "requested)")
            entry = found
            if entry.held_by(self.host):
                self._held[key] = (entry, time.monotonic())
        self._check_range(pool_id, entry)
        return entry
