"""Pools: one CAS'd AddressSpace record per address space, holders counted per host.

Explicit pools are shared by every host that asks for the same definition; a host may hold
a LocalDefault pool once (a second network on the same subnet overlaps). Automatic pools
never overlap another pool or a host route.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable

from pynet.defaults import DefaultPool
from pynet.errors import BackendUnavailable, BadRequest, Exhausted, NotFound
from pynet.store import keys
from pynet.store.api import Store

from . import allocator, models
from .allocator import Network
from .hostblocks import HostBlocks
from .models import AddressSpace, PoolEntry
from .options import check_pool_options, pool_block_size
from .pool_id import PoolId
from .protocol import PoolRequest
from pynet.repair import RepairQueue

LOCAL_SPACE = "LocalDefault"
GLOBAL_SPACE = "GlobalDefault"
SPACES = (LOCAL_SPACE, GLOBAL_SPACE)
POOL_TTL = 5.0  # seconds a held pool's record is trusted without reading it again


class Pools:
    def __init__(self, store: Store, host: str, default_pools: tuple[DefaultPool, ...],
                 host_routes: Callable[[], list[Network]], block_size: int,
                 blocks: HostBlocks, repairs: RepairQueue) -> None:
        self.store = store
        self.host = host
        self.default_pools = default_pools
        self.host_routes = host_routes
        self.block_size = block_size
        self._blocks = blocks
        self._repairs = repairs
        # Pools this host holds, as last read: a pool cannot go away while this host holds
        # it, so RequestAddress need not read the pool record every time (POOL_TTL).
        self._held: dict[tuple[str, Network], tuple[PoolEntry, float]] = {}

    def request(self, req: PoolRequest) -> PoolId:
        space = req.space or LOCAL_SPACE
        if space not in SPACES:
            raise BadRequest(f"unknown address space {space!r}: pynet serves {', '.join(SPACES)}")
        check_pool_options(req.options)
        block = pool_block_size(req.options, self.block_size)
        wanted, sub = req.pool, req.subpool
        if wanted is not None:
            if (wanted.version == 6) != req.v6:
                raise BadRequest(f"subnet {wanted} is IPv{wanted.version} but Docker asked for an "
                                 f"IPv{6 if req.v6 else 4} pool")
            if sub is not None and (sub.version != wanted.version or not sub.subnet_of(wanted)):
                raise BadRequest(f"IP range {sub} is not inside subnet {wanted}")

        def claim(current: AddressSpace | None) -> AddressSpace:
            current = current or AddressSpace({})
            chosen = wanted or self._automatic(current, 6 if req.v6 else 4)
            return current.holding(chosen, sub, self.host, block, exclusive=space == LOCAL_SPACE)

        result = models.update(self.store, keys.ipam_space(space), AddressSpace, claim,
                               "requesting a pool")
        assert result is not None and result.chosen is not None  # claim() never deletes
        return PoolId(space, result.chosen, sub)

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

    def release(self, pool_id: PoolId) -> None:
        """Drop this host's hold; the last holder deletes the pool and its addresses.
        Docker ignores a failure here, so with the store unreachable it is also queued."""
        try:
            self._release(pool_id)
        except BackendUnavailable:
            self._repairs.add(f"releasing pool {pool_id} held by {self.host}",
                              functools.partial(self._release, pool_id))
            raise

    def _release(self, pool_id: PoolId) -> None:
        pool = pool_id.pool
        self._held.pop((pool_id.space, pool), None)

        def drop(current: AddressSpace | None) -> AddressSpace | None:
            if current is None or pool not in current.pools:
                return current  # already released: a replay
            return current.releasing(pool, self.host)

        result = models.update(self.store, keys.ipam_space(pool_id.space), AddressSpace, drop,
                               "releasing a pool")
        left = None if result is None else result.pools.get(pool)
        if left is None:
            self._blocks.forget(pool_id)
            cidr = str(pool)
            for prefix in (keys.ipam_addrs(pool_id.space, cidr), keys.ipam_blocks(pool_id.space, cidr)):
                for entry in self.store.list(prefix):
                    self.store.delete(entry.key, entry.version)
        elif not left.held_by(self.host):
            self._blocks.give_back_all(pool_id)

    def entry(self, pool_id: PoolId) -> PoolEntry:
        """The pool's record; NotFound if it is not allocated."""
        key = (pool_id.space, pool_id.pool)
        held = self._held.get(key)
        if held is not None and time.monotonic() - held[1] < POOL_TTL:
            return held[0]
        space = models.read(self.store, keys.ipam_space(pool_id.space), AddressSpace)
        entry = None if space is None else space.pools.get(pool_id.pool)
        if entry is None:
            raise NotFound(f"pool {pool_id} is not allocated (it was released, or never requested)")
        if entry.held_by(self.host):
            self._held[key] = (entry, time.monotonic())
        return entry
