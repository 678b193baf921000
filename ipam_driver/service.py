"""IPAM: pools and addresses kept in the store, shared by every host on the same store.

Uniqueness rests on the store alone: a pool set is one CAS'd record per address space
(pools.py), and every claimed address is a create-if-absent key naming its owner
(addresses.py). No lock; what a host remembers (its blocks, the pools it holds) only picks
candidates, it never decides. With Consul, see docs/consul.md: per-host blocks
(hostblocks.py), claims whose outcome is never left in doubt (pynet_core/store/fenced.py), releases repeated
once the store answers (repair.py). Requests and replies are typed (protocol.py).
"""
from __future__ import annotations

import ipaddress

from dataclasses import dataclass, field
from typing import Callable

from pynet_core.defaults import DEFAULT_BLOCK_SIZE, DEFAULT_POOLS, DefaultPool
from pynet_core.store.api import Entry, Store

from .addresses import Addresses
from .allocator import Address, Interface, Network
from pynet_core.store.fenced import FencedWrites
from .hostblocks import HostBlocks
from .pool_id import PoolId
from .pools import GLOBAL_SPACE, LOCAL_SPACE, Pools
from .protocol import AddressRequest, Capabilities, DefaultSpaces, PoolRequest
from pynet_core.retry_queue import RetryQueue

__all__ = ["DefaultPool", "IpamService", "LOCAL_SPACE", "GLOBAL_SPACE"]


@dataclass
class IpamService:
    store: Store
    host: str
    default_pools: tuple[DefaultPool, ...] = DEFAULT_POOLS
    # Networks routed on this host: automatic pools must not shadow them.
    host_routes: Callable[[], list[Network]] = field(default=lambda: [])
    # Addresses per host block for pools created here (0: none); see blocks.py.
    block_size: int = DEFAULT_BLOCK_SIZE
    retries: RetryQueue = field(default_factory=RetryQueue, repr=False)

    def __post_init__(self) -> None:
        claims = FencedWrites(self.store, self.host, self.retries)
        blocks = HostBlocks(self.store, self.host, claims)
        self._pools = Pools(self.store, self.host, self.default_pools, self.host_routes,
                            self.block_size, blocks, self.retries, claims)
        self._addresses = Addresses(self.store, self.host, self._pools, claims, blocks,
                                    self.retries)

    def capabilities(self) -> Capabilities:
        # Everything is persisted, so Docker need not replay requests after a restart.
        return Capabilities(requires_mac=False, requires_replay=False)

    def default_address_spaces(self) -> DefaultSpaces:
        return DefaultSpaces(local=LOCAL_SPACE, global_=GLOBAL_SPACE)

    def request_pool(self, req: PoolRequest) -> PoolId:
        return self._pools.request(req)

    def release_pool(self, pool_id: PoolId) -> None:
        self._pools.release(pool_id)

    def holds_pool(self, space: str, subnet: str) -> bool:
        """Whether this host's pynet IPAM gave out `subnet` as a pool of `space`."""
        return self._pools.held_here(space, ipaddress.ip_network(subnet))

    def request_address(self, req: AddressRequest) -> Interface:
        return self._addresses.request(req)

    def release_address(self, pool_id: PoolId, address: Address) -> None:
        self._addresses.release(pool_id, address)

    def release_leaked(self, entry: Entry) -> bool:
        """Delete an address claim exactly as read (the leak check decided nobody uses it)."""
        return self._addresses.release_leaked(entry)

    def release_leaked_pool(self, space: str, pool: Network, holds: frozenset[str],
                            unnamed: int) -> bool:
        """Drop this host's holds on pool if still exactly these (the leak check decided
        nothing of this host uses the pool), with this host's claims on it."""
        return self._pools.release_leaked(space, pool, holds, unnamed)
