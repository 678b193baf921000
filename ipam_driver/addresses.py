"""Addresses: every claimed address is a create-if-absent key naming its owner.

A free address comes from this host's blocks when the pool has them (hostblocks.py), else
it is the lowest free one; a gateway is shared by every host on the pool. Releases Docker
would never repeat are queued while the store does not answer (repair.py).
"""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import replace

from pynet_core.errors import BackendUnavailable, BadRequest, Conflict, Exhausted, StoreContention
from pynet_core.store import keys, records
from pynet_core.store.api import Entry, Store

from . import allocator, blocks, models
from .allocator import Address, Interface, Network
from pynet_core.store.fenced import FencedCreates, FencedWrites, claim_id
from .hostblocks import HostBlocks, addresses_in, used_addresses
from .models import AddressClaim, claimed_ip
from .pool_id import PoolId
from .pools import GLOBAL_SPACE, Pools
from .protocol import AddressRequest
from pynet_core.retry_queue import RetryQueue


class Addresses:
    def __init__(self, store: Store, host: str, pools: Pools, claims: FencedWrites,
                 blocks: HostBlocks, retries: RetryQueue) -> None:
        self.store = store
        self.host = host
        self._pools = pools
        self._claims = claims
        self._fenced = FencedCreates(claims)
        self._blocks = blocks
        self._retries = retries

    def request(self, req: AddressRequest) -> Interface:
        """Claim one address: the one asked for, or a free one."""
        pool_id, pool = req.pool_id, req.pool_id.pool
        entry = self._pools.entry(pool_id)
        owner = AddressClaim.new(req.kind, req.name, self.host, claim_id(), pool_id.hold)
        ip = req.address
        if ip is not None:
            if ip not in pool:
                raise BadRequest(f"address {ip} is not in subnet {pool}")
            if int(ip) in allocator.reserved_addresses(pool):
                raise BadRequest(f"address {ip} is the subnet or broadcast address of {pool}")
            if owner.gateway:
                shared = self._existing_gateway(pool_id)
                if shared is not None and shared != ip:
                    raise Conflict(f"subnet {pool} already has gateway {shared} (on another "
                                   f"host or network); a second gateway {ip} is not allowed")
            self._claim(pool_id, ip, owner)
        elif owner.gateway:
            ip = self._claim_gateway(pool_id, owner)
        else:
            size = self._pools.block_size if entry.block is None else entry.block
            ip = self._claim_free(pool_id, pool_id.allocation_range, owner, size)
        return ipaddress.ip_interface((ip, pool.prefixlen))

    def _claim_gateway(self, pool_id: PoolId, owner: AddressClaim) -> Address:
        """Every host on a shared pool uses the same gateway: the one claimed already, else
        the lowest free address. Hosts creating the network at the same moment all choose
        that address, and _claim makes each of them a holder of the one gateway claim."""
        for _ in range(records.MAX_ATTEMPTS):
            entries = self.store.list(keys.ipam_addrs(pool_id.space, str(pool_id.pool)))
            ip = _gateway_in(entries)
            if ip is None:
                used = addresses_in(entries)
                free = allocator.first_free_address(pool_id.pool, pool_id.pool, used)
                if free is None:
                    raise Exhausted(f"no free address left in {pool_id.pool} for its gateway")
                ip = ipaddress.ip_address(free)
            try:
                self._claim(pool_id, ip, owner)
                return ip
            except Conflict:
                continue  # a container took that address first: choose again
        raise StoreContention(f"gave up choosing a gateway for {pool_id.pool}")

    def _existing_gateway(self, pool_id: PoolId) -> Address | None:
        return _gateway_in(self.store.list(keys.ipam_addrs(pool_id.space, str(pool_id.pool))))

    def _claim(self, pool_id: PoolId, ip: Address, owner: AddressClaim) -> None:
        key = keys.ipam_addr(pool_id.space, str(pool_id.pool), str(ip))

        def take(current: AddressClaim | None) -> AddressClaim:
            if current is None:
                return owner
            if owner.gateway and current.gateway:
                return current.joined_by(owner.host)
            if current.same_owner(owner):
                return current  # the same container asking again: a replay
            if pool_id.space == GLOBAL_SPACE and current.restored_by(owner):
                # Swarm's raft log is the truth for its addresses (docs/swarm.md): the claim
                # becomes the restoring allocator's, so its ReleaseAddress frees it.
                return replace(current, host=owner.host, hold=owner.hold, claim=owner.claim)
            raise Conflict(f"address {ip} is already in use by {current.describe()}")

        models.update(self._fenced, key, AddressClaim, take, f"claiming {ip}")

    def _claim_free(self, pool_id: PoolId, within: Network, owner: AddressClaim,
                    size: int) -> Address:
        value = models.encode(owner)
        block_prefix = blocks.block_prefix(within, size)
        if block_prefix is not None:
            return self._blocks.allocate(pool_id, within, block_prefix, value)
        prefix = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        for _ in range(records.MAX_ATTEMPTS):
            used = used_addresses(self.store, prefix)
            free = allocator.first_free_address(within, pool_id.pool, used)
            if free is None:
                raise Exhausted(f"no free address left in {within} (pool {pool_id.pool})")
            ip = ipaddress.ip_address(free)
            if self._claims.create(prefix + str(ip), value):
                return ip
        raise StoreContention(f"gave up allocating from {within}: other hosts kept taking the "
                              "free address first")

    def release(self, pool_id: PoolId, ip: Address) -> None:
        """Idempotent: releasing a free address succeeds. A shared gateway stays claimed
        until the last host using it lets go. Docker ignores a failure here, so with the
        store unreachable the release is also queued, for exactly the claim it saw."""
        key = keys.ipam_addr(pool_id.space, str(pool_id.pool), str(ip))
        seen: list[AddressClaim] = []

        def free(current: AddressClaim | None) -> AddressClaim | None:
            if current is None:
                return None
            seen[:] = [current]
            return current.freed_by(self.host)

        try:
            models.update(self.store, key, AddressClaim, free, f"releasing {ip}")
        except BackendUnavailable:
            self._retries.add(f"releasing {ip} of pool {pool_id}",
                              functools.partial(self._release_later, key, seen[0] if seen else None))
            raise
        if seen and not seen[0].gateway:
            try:
                self._blocks.released(pool_id, int(ip))
            except BackendUnavailable:
                pass  # blocks are hints: an idle one left with this host costs nothing

    def release_leaked(self, entry: Entry) -> bool:
        """Free an address claim exactly as read (leaks.py decided nothing of this host uses
        it): delete it, or for a gateway other hosts hold, drop this host from its holders."""
        rest = models.decode(AddressClaim, entry).freed_by(self.host)
        done = (self.store.delete(entry.key, entry.version) if rest is None
                else self.store.cas(entry.key, models.encode(rest), entry.version))
        if not done:
            return False  # changed or gone since it was read: not ours to judge any more
        if rest is not None:
            return True
        space, pool, ip = keys.claimed_address_parts(entry.key)
        try:
            self._blocks.released(PoolId(space, ipaddress.ip_network(pool)),
                                  int(ipaddress.ip_address(ip)))
        except BackendUnavailable:
            pass  # blocks are hints (see release)
        return True

    def _release_later(self, key: str, seen: AddressClaim | None) -> None:
        """The queued form of a release: frees the claim only if it is still the one the
        failed release saw (a claim made since is someone else's)."""
        entry = self.store.get(key)
        if entry is None:
            return
        current = models.decode(AddressClaim, entry)
        if seen is not None and current.claim != seen.claim:
            return
        new = current.freed_by(self.host)
        done = (self.store.delete(key, entry.version) if new is None
                else self.store.cas(key, models.encode(new), entry.version))
        if not done:
            raise BackendUnavailable(f"{key} changed while being released; trying again")


def _gateway_in(entries: list[Entry]) -> Address | None:
    """The pool's gateway among its address claims, if one is claimed."""
    return next((claimed_ip(e) for e, claim in models.readable(entries, AddressClaim, "address claim")
                 if claim.gateway), None)
