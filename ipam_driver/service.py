"""IPAM: pools and addresses kept in the store, shared by every host on the same store.

Uniqueness rests on the store alone: a pool set is one CAS'd record per address space, and
every claimed address is a create-if-absent key naming its owner. No lock; what a host
remembers (its blocks, the pools it holds) only picks candidates, it never decides.
With Consul, see docs/consul.md: per-host blocks (hostblocks.py), claims whose outcome
is never left in doubt (claims.py), releases repeated once the store answers (repair.py).
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from pynet.defaults import DEFAULT_BLOCK_SIZE, DEFAULT_POOLS, DefaultPool
from pynet.errors import BackendUnavailable, BadRequest, Conflict, Exhausted, NotFound, StoreContention
from pynet.store import keys, records
from pynet.store.api import Entry, Store

from . import allocator, blocks
from .allocator import Network
from .claims import Claims, FencedCreates, claim_id
from .hostblocks import HostBlocks, used_addresses
from .options import (ENDPOINT_NAME, address_kind, check_pool_options, parse_address, parse_network, pool_block_size)
from .pool_id import PoolId
from .repair import RepairQueue

log = logging.getLogger(__name__)

LOCAL_SPACE = "LocalDefault"
GLOBAL_SPACE = "GlobalDefault"
SPACES = (LOCAL_SPACE, GLOBAL_SPACE)
POOL_TTL = 5.0  # seconds a held pool's record is trusted without reading it again


@dataclass
class IpamService:
    store: Store
    host: str
    default_pools: tuple[DefaultPool, ...] = DEFAULT_POOLS
    # Networks routed on this host: automatic pools must not shadow them.
    host_routes: Callable[[], list[Network]] = field(default=lambda: [])
    # Addresses per host block for pools created here (0: none); see blocks.py.
    block_size: int = DEFAULT_BLOCK_SIZE
    repairs: RepairQueue = field(default_factory=RepairQueue, repr=False)

    def __post_init__(self) -> None:
        self._claims = Claims(self.store, self.host, self.repairs)
        self._fenced = FencedCreates(self._claims)
        self._blocks = HostBlocks(self.store, self.host, self._claims)
        # Pools this host holds, as last read: a pool cannot go away while this host holds
        # it, so RequestAddress need not read the pool record every time (POOL_TTL).
        self._held: dict[tuple[str, str], tuple[dict, float]] = {}

    # --- IpamDriver.GetCapabilities / GetDefaultAddressSpaces -------------------------
    def capabilities(self) -> dict:
        # Everything is persisted, so Docker need not replay requests after a restart.
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def default_address_spaces(self) -> dict:
        return {"LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE}

    # --- IpamDriver.RequestPool ---------------------------------------------------------
    def request_pool(self, space: str, pool: str, subpool: str, options: dict[str, str],
                     v6: bool) -> tuple[PoolId, dict[str, str]]:
        """Explicit pools are shared by every host that asks for the same definition; a
        host may hold a LocalDefault pool once (a second network on the same subnet
        overlaps). Automatic pools never overlap another pool or a host route."""
        space = space or LOCAL_SPACE
        if space not in SPACES:
            raise BadRequest(f"unknown address space {space!r}: pynet serves {', '.join(SPACES)}")
        check_pool_options(options)
        block = pool_block_size(options, self.block_size)
        if subpool and not pool:
            raise BadRequest(f"an IP range ({subpool}) needs a subnet to go with it")
        wanted = parse_network(pool, "subnet") if pool else None
        sub = parse_network(subpool, "IP range") if subpool else None
        if wanted is not None:
            if (wanted.version == 6) != v6:
                raise BadRequest(f"subnet {wanted} is IPv{wanted.version} but Docker asked for an "
                                 f"IPv{6 if v6 else 4} pool")
            if sub is not None and (sub.version != wanted.version or not sub.subnet_of(wanted)):
                raise BadRequest(f"IP range {sub} is not inside subnet {wanted}")

        def claim(record):
            pools = (record or {}).get("pools", {})
            chosen = wanted or self._automatic(pools, 6 if v6 else 4)
            pools = _with_holder(pools, chosen, sub, space, self.host, block)
            return {"pools": pools, "chosen": str(chosen)}

        result = records.update(self.store, keys.ipam_space(space), claim, "requesting a pool")
        pool_net = ipaddress.ip_network(result["chosen"])
        return PoolId(space, pool_net, sub), {}

    def _automatic(self, pools: dict, version: int) -> Network:
        taken = [ipaddress.ip_network(p) for p in pools]
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

    # --- IpamDriver.ReleasePool ---------------------------------------------------------
    def release_pool(self, pool_id: PoolId) -> None:
        """Drop this host's hold; the last holder deletes the pool and its addresses.
        Docker ignores a failure here, so with the store unreachable it is also queued."""
        try:
            self._release_pool(pool_id)
        except BackendUnavailable:
            self.repairs.add(f"releasing pool {pool_id} held by {self.host}",
                             functools.partial(self._release_pool, pool_id))
            raise

    def _release_pool(self, pool_id: PoolId) -> None:
        cidr = str(pool_id.pool)
        self._held.pop((pool_id.space, cidr), None)

        def drop(record):
            pools = dict((record or {}).get("pools", {}))
            entry = pools.get(cidr)
            if entry is None:
                return record  # already released: a replay
            holders = dict(entry["holders"])
            holders[self.host] = holders.get(self.host, 0) - 1
            if holders[self.host] <= 0:
                del holders[self.host]
            if holders:
                pools[cidr] = {**entry, "holders": holders}
            else:
                del pools[cidr]
            return {"pools": pools}

        record = records.update(self.store, keys.ipam_space(pool_id.space), drop, "releasing a pool")
        if record is None or cidr not in record.get("pools", {}):
            self._blocks.forget(pool_id)
            for prefix in (keys.ipam_addrs(pool_id.space, cidr), keys.ipam_blocks(pool_id.space, cidr)):
                for entry in self.store.list(prefix):
                    self.store.delete(entry.key, entry.version)
        elif self.host not in record["pools"][cidr]["holders"]:
            self._blocks.give_back_all(pool_id)

    # --- IpamDriver.RequestAddress ------------------------------------------------------
    def request_address(self, pool_id: PoolId, address: str, options: dict[str, str]) -> str:
        """Claim one address (a specific one, or a free one: from this host's blocks when the
        pool has them, else the lowest free) as a create-if-absent key."""
        entry = self._pool_record(pool_id)
        kind = address_kind(options)
        # "claim" makes every value unique, so a claim left in doubt is known for ours.
        owner = {"kind": kind, "name": options.get(ENDPOINT_NAME, ""),
                 "host": self.host, "claim": claim_id()}
        pool = pool_id.pool
        if address:
            ip = parse_address(address, "address")
            if ip not in pool:
                raise BadRequest(f"address {ip} is not in subnet {pool}")
            if int(ip) in allocator.reserved_addresses(pool):
                raise BadRequest(f"address {ip} is the subnet or broadcast address of {pool}")
            if kind == "gateway":
                shared = self._existing_gateway(pool_id)
                if shared is not None and shared != ip:
                    raise Conflict(f"subnet {pool} already has gateway {shared} (on another "
                                   f"host or network); a second gateway {ip} is not allowed")
            self._claim(pool_id, ip, owner)
        elif kind == "gateway":
            ip = self._claim_gateway(pool_id, owner)
        else:
            ip = self._claim_free(pool_id, pool_id.allocation_range, owner,
                                  entry.get("block", self.block_size))
        return f"{ip}/{pool.prefixlen}"

    def _claim_gateway(self, pool_id: PoolId, owner: dict):
        """Every host on a shared pool uses the same gateway: the one claimed already, else
        the lowest free address. Hosts creating the network at the same moment all choose
        that address, and _claim makes each of them a holder of the one gateway claim."""
        for _ in range(records.MAX_ATTEMPTS):
            entries = self.store.list(keys.ipam_addrs(pool_id.space, str(pool_id.pool)))
            ip = _gateway_in(entries)
            if ip is None:
                used = {int(_ip_of(e)) for e in entries}
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

    def _pool_record(self, pool_id: PoolId) -> dict:
        held = self._held.get((pool_id.space, str(pool_id.pool)))
        if held is not None and time.monotonic() - held[1] < POOL_TTL:
            return held[0]
        record = records.read(self.store, keys.ipam_space(pool_id.space)) or {}
        entry = record.get("pools", {}).get(str(pool_id.pool))
        if entry is not None and self.host in entry.get("holders", {}):
            self._held[(pool_id.space, str(pool_id.pool))] = (entry, time.monotonic())
        if entry is None:
            raise NotFound(f"pool {pool_id} is not allocated (it was released, or never requested)")
        return entry

    def _existing_gateway(self, pool_id: PoolId):
        return _gateway_in(self.store.list(keys.ipam_addrs(pool_id.space, str(pool_id.pool))))

    def _claim(self, pool_id: PoolId, ip, owner: dict) -> None:
        key = keys.ipam_addr(pool_id.space, str(pool_id.pool), str(ip))

        def take(current):
            if current is None:
                return _claim_value(owner)
            if owner["kind"] == "gateway" and current["kind"] == "gateway":
                return {**current, "holders": sorted(set(current["holders"]) | {owner["host"]})}
            if owner["kind"] == current["kind"] and owner["name"] and (
                    owner["name"], owner["host"]) == (current["name"], current["host"]):
                return current  # the same container asking again: a replay
            raise Conflict(f"address {ip} is already in use by {_describe(current)}")

        records.update(self._fenced, key, take, f"claiming {ip}")  # type: ignore[arg-type]

    def _claim_free(self, pool_id: PoolId, within: Network, owner: dict, size: int = 0):
        value = _claim_value(owner)
        block_prefix = blocks.block_prefix(within, size)
        if block_prefix is not None:
            return self._blocks.allocate(pool_id, within, block_prefix, records.dump(value))
        prefix = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        for _ in range(records.MAX_ATTEMPTS):
            used = used_addresses(self.store, prefix)
            free = allocator.first_free_address(within, pool_id.pool, used)
            if free is None:
                raise Exhausted(f"no free address left in {within} (pool {pool_id.pool})")
            ip = ipaddress.ip_address(free)
            if self._claims.create(prefix + str(ip), records.dump(value)):
                return ip
        raise StoreContention(f"gave up allocating from {within}: other hosts kept taking the "
                              "free address first")

    # --- IpamDriver.ReleaseAddress ------------------------------------------------------
    def release_address(self, pool_id: PoolId, address: str) -> None:
        """Idempotent: releasing a free address succeeds. A shared gateway stays claimed
        until the last host using it lets go. Docker ignores a failure here, so with the
        store unreachable the release is also queued, for exactly the claim it saw."""
        ip = parse_address(address, "address")
        key = keys.ipam_addr(pool_id.space, str(pool_id.pool), str(ip))
        seen: list[dict] = []

        def free(current):
            if current is not None:
                seen[:] = [current]
            return _freed(current, self.host)

        try:
            records.update(self.store, key, free, f"releasing {ip}")
        except BackendUnavailable:
            self.repairs.add(f"releasing {ip} of pool {pool_id}",
                             functools.partial(self._release_later, key, seen[0] if seen else None))
            raise
        if seen and seen[0]["kind"] != "gateway":
            try:
                self._blocks.released(pool_id, int(ip))
            except BackendUnavailable:
                pass  # blocks are hints: an idle one left with this host costs nothing

    def release_leaked(self, entry: Entry) -> bool:
        """Delete an address claim exactly as read (leaks.py decided nobody uses it)."""
        if not self.store.delete(entry.key, entry.version):
            return False  # changed or gone since it was read: not ours to judge any more
        space, pool, ip = keys.claimed_address_parts(entry.key)
        try:
            self._blocks.released(PoolId(space, ipaddress.ip_network(pool)),
                                  int(ipaddress.ip_address(ip)))
        except BackendUnavailable:
            pass  # blocks are hints (see release_address)
        return True

    def _release_later(self, key: str, seen: dict | None) -> None:
        """The queued form of a release: frees the claim only if it is still the one the
        failed release saw (a claim made since is someone else's)."""
        entry = self.store.get(key)
        if entry is None:
            return
        current = records.load(entry)
        if seen is not None and current.get("claim") != seen.get("claim"):
            return
        new = _freed(current, self.host)
        done = (self.store.delete(key, entry.version) if new is None
                else self.store.cas(key, records.dump(new), entry.version))
        if not done:
            raise BackendUnavailable(f"{key} changed while being released; trying again")


def _ip_of(entry: Entry):
    """The address an address claim's key names (its last component)."""
    return ipaddress.ip_address(keys.claimed_address(entry.key))


def _gateway_in(entries: list[Entry]):
    """The pool's gateway among its address claims, if one is claimed."""
    return next((_ip_of(e) for e in entries if records.load(e)["kind"] == "gateway"), None)


def _claim_value(owner: dict) -> dict:
    """What a new claim stores: a gateway also lists the hosts sharing it."""
    return {**owner, "holders": [owner["host"]]} if owner["kind"] == "gateway" else owner


def _freed(current: dict | None, host: str) -> dict | None:
    """The claim once `host` lets go of it: None (delete it), or a gateway other hosts hold."""
    if current is None:
        return None
    if current["kind"] == "gateway":
        holders = [h for h in current["holders"] if h != host]
        return {**current, "holders": holders} if holders else None
    return None


def _with_holder(pools: dict, chosen: Network, sub: Network | None, space: str, host: str,
                 block: int = 0) -> dict:
    """pools with `host` holding `chosen`, or Conflict if that would overlap or redefine."""
    cidr = str(chosen)
    existing = pools.get(cidr)
    if existing is None:
        for other in pools:
            if ipaddress.ip_network(other).overlaps(chosen):
                raise Conflict(f"subnet {chosen} overlaps pool {other}, already in use"
                               f"{_by(pools[other])}")
        # The block size is fixed when the pool is made, so every host cuts the same blocks.
        existing = {"subpool": str(sub) if sub else None, "holders": {}, "block": block}
    else:
        if existing["subpool"] != (str(sub) if sub else None):
            raise Conflict(f"subnet {chosen} is already defined with IP range "
                           f"{existing['subpool'] or 'the whole subnet'}; this request asks for "
                           f"{sub or 'the whole subnet'}")
        if space == LOCAL_SPACE and host in existing["holders"]:
            raise Conflict(f"subnet {chosen} is already used by another network on this host "
                           f"({host})")
    holders = dict(existing["holders"])
    holders[host] = holders.get(host, 0) + 1
    return {**pools, cidr: {**existing, "holders": holders}}


def _by(entry: dict) -> str:
    hosts = sorted(entry.get("holders", {}))
    return f" on host {', '.join(hosts)}" if hosts else ""


def _describe(owner: dict) -> str:
    if owner["kind"] == "endpoint":
        return f"container {owner['name']!r} on host {owner['host']}"
    if owner["kind"] == "gateway":
        return "the network's gateway"
    return f"an auxiliary address reserved on host {owner['host']}"
