"""Allocation from per-host address blocks (the choice itself is pure: blocks.py).

A host keeps a view of each pool it allocates from: the blocks (its own and the others')
and the claimed addresses, read from the store and then kept up to date with its own
claims. An allocation is then one fenced create of the address (plus, once per block, one
create of the block). The view only picks the candidate: the create-if-absent key alone
decides, so a stale view costs a lost create and a fresh read, never a duplicate. Views
are read afresh after a lost create, when they say the range is full, and after VIEW_TTL.
Threads of this process never race each other for an address: an address being claimed is
held in memory until its create has answered.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from pynet_core.errors import BadRecord, Exhausted, StoreContention
from pynet_core.store import bad_records, keys, records
from pynet_core.store.api import Store

from . import blocks, models
from .allocator import Network
from pynet_core.store.fenced import FencedWrites, claim_id
from .models import BlockClaim
from .pool_id import PoolId

log = logging.getLogger(__name__)

VIEW_TTL = 5.0  # seconds a pool view is trusted for choosing candidates


@dataclass
class _View:
    mine: list[Network]
    taken: list[Network]
    used: set[int]
    read_at: float


class HostBlocks:
    def __init__(self, store: Store, host: str, claims: FencedWrites) -> None:
        self.store = store
        self.host = host
        self.claims = claims
        self._lock = threading.Lock()
        self._in_flight: defaultdict[str, set[int]] = defaultdict(set)
        self._views: dict[str, _View] = {}
        # One block claim at a time per pool: threads that fill a block together would
        # otherwise all race (and all but one lose) for the next one.
        self._claiming: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        # Addresses this host claimed lately, with when: a view read while one of those
        # creates was still on its way may lack it, so each fresh view gets them added.
        self._recent: defaultdict[str, dict[int, float]] = defaultdict(dict)

    def allocate(self, pool_id: PoolId, within: Network, prefix: int, value: str):
        """Claim a free address of `within` with `value` (an encoded AddressClaim)."""
        addrs = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        reread, blocks_seen = False, 0
        for _ in range(records.MAX_ATTEMPTS):
            view, fresh = self._view(pool_id, reread)
            with self._lock:
                flying = self._in_flight[addrs]
                choice = blocks.choose(within, pool_id.pool, prefix, view.mine, view.taken,
                                       view.used | flying)
                if choice is None and fresh:
                    raise Exhausted(f"no free address left in {within} (pool {pool_id.pool})")
                if choice is not None:
                    flying.add(choice.address)
                    blocks_seen = len(view.mine)
            if choice is None:
                reread = True  # an old view may miss addresses freed since
                continue
            try:
                if choice.kind == "claim":
                    outcome = self._take_block(pool_id, choice.block, view, blocks_seen)
                    if outcome != "claimed":
                        reread = outcome == "lost"  # "ours": a block this host just got
                        continue
                if self.claims.create(addrs + str(ipaddress.ip_address(choice.address)), value):
                    self._note_claimed(addrs, view, choice.address)
                    return ipaddress.ip_address(choice.address)
                reread = True  # someone else holds that address: read afresh
            finally:
                with self._lock:
                    flying.discard(choice.address)
        raise StoreContention(f"gave up allocating from {within}: other hosts kept taking the "
                              "free address first")

    def _take_block(self, pool_id: PoolId, block: Network, view: _View, blocks_seen: int) -> str:
        """Claim `block` for this host: "claimed", "lost" (another host has it), or "ours"
        (another thread of this host claimed a block meanwhile: use that one first)."""
        addrs = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        with self._lock:
            claiming = self._claiming[addrs]
        with claiming:
            if len(self._views.get(addrs, view).mine) > blocks_seen:
                return "ours"
            if not self._claim_block(pool_id, block):
                return "lost"
            with self._lock:
                view.mine.append(block)
                view.taken.append(block)
        return "claimed"

    def _note_claimed(self, addrs: str, view: _View, address: int) -> None:
        with self._lock:
            view.used.add(address)
            if (current := self._views.get(addrs)) is not None:
                current.used.add(address)
            self._recent[addrs][address] = time.monotonic()

    def released(self, pool_id: PoolId, address: int) -> None:
        """An address of the pool was released: note it, and give back this host's blocks
        that hold nothing any more (always keeping one)."""
        addrs = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        with self._lock:
            self._recent[addrs].pop(address, None)
            view = self._views.get(addrs)
        if view is None:
            # No view yet (a plugin restarted, or a block was just given back): read one and
            # keep it. Going to give_back_idle instead listed every claim of the pool on
            # every such release, and dropped the view again, so after a restart each
            # ReleaseAddress cost a scan of the pool (2.4 -> 10 ms at 1,000 claims, issue 22).
            view, _ = self._view(pool_id, reread=False)
        with self._lock:
            view.used.discard(address)
            # Only the released address's block can have become empty by this release. The
            # view only decides whether to look: give_back_idle gives a block back only if
            # the store, read then, shows no address claimed in it.
            home = [b for b in view.mine if int(b.network_address) <= address
                    <= int(b.broadcast_address)]
            if len(view.mine) <= 1 or not home or not blocks.block_is_empty(home[0], view.used):
                return  # nothing to give back, as far as this host knows
        self.give_back_idle(pool_id)

    def forget(self, pool_id: PoolId) -> None:
        addrs = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        with self._lock:
            self._views.pop(addrs, None)
            self._recent.pop(addrs, None)

    def _view(self, pool_id: PoolId, reread: bool) -> tuple[_View, bool]:
        """(the pool's view, whether it was just read)."""
        addrs = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        with self._lock:
            view = self._views.get(addrs)
        if view is not None and not reread and time.monotonic() - view.read_at < VIEW_TTL:
            return view, False
        read_at = time.monotonic()
        mine, taken = self._blocks(pool_id)
        view = _View(mine, taken, used_addresses(self.store, addrs), read_at)
        with self._lock:
            recent = self._recent[addrs]
            for address, claimed_at in list(recent.items()):
                if claimed_at < read_at - 2 * VIEW_TTL:
                    del recent[address]  # long since in every listing
                else:
                    view.used.add(address)
            self._views[addrs] = view
        return view, True

    def give_back_idle(self, pool_id: PoolId) -> None:
        """Give back this host's blocks of the pool that hold no address (keeping one)."""
        mine, _ = self._blocks(pool_id)
        if len(mine) <= 1:
            return
        addrs = keys.ipam_addrs(pool_id.space, str(pool_id.pool))
        used = used_addresses(self.store, addrs)
        with self._lock:
            used |= self._in_flight[addrs]
        for block in blocks.idle_blocks(mine, used):
            self._drop(pool_id, block)
        self.forget(pool_id)

    def give_back_all(self, pool_id: PoolId) -> None:
        """This host no longer uses the pool: give back all its blocks."""
        for block in self._blocks(pool_id)[0]:
            self._drop(pool_id, block)
        self.forget(pool_id)

    def _blocks(self, pool_id: PoolId) -> tuple[list[Network], list[Network]]:
        """(this host's blocks, every claimed block) of the pool."""
        mine, taken = [], []
        for entry in self.store.list(keys.ipam_blocks(pool_id.space, str(pool_id.pool))):
            block = ipaddress.ip_network(entry.key.rsplit("/", 1)[1].replace("_", "/"))
            taken.append(block)
            try:
                if models.decode(BlockClaim, entry).host == self.host:
                    mine.append(block)
            except BadRecord as exc:  # taken all the same: its key exists
                bad_records.skipped(entry, exc.reason, "block claim")
        return mine, taken

    def _claim_block(self, pool_id: PoolId, block: Network) -> bool:
        key = keys.ipam_block(pool_id.space, str(pool_id.pool), str(block))
        if not self.claims.create(key, models.encode(BlockClaim(self.host, claim_id()))):
            return False
        log.info("host %s claimed block %s of pool %s", self.host, block, pool_id)
        return True

    def _drop(self, pool_id: PoolId, block: Network) -> None:
        key = keys.ipam_block(pool_id.space, str(pool_id.pool), str(block))
        entry = self.store.get(key)
        if entry is not None and _owner(entry) == self.host:
            if self.store.delete(key, entry.version):
                log.info("host %s gave back block %s of pool %s", self.host, block, pool_id)


def used_addresses(store: Store, prefix: str) -> set[int]:
    """Every address claimed under prefix (a pool's ipam_addrs), as integers."""
    return addresses_in(store.list(prefix))


def addresses_in(entries: list) -> set[int]:
    """The addresses a listing of claims takes, as integers (a key naming none takes none)."""
    used = set()
    for entry in entries:
        try:
            used.add(int(models.claimed_ip(entry)))
        except BadRecord as exc:  # names no address, so it takes none
            bad_records.skipped(entry, exc.reason, "address claim")
    return used


def _owner(entry) -> str | None:
    """The host a block claim names; None for a bad record (not provably this host's)."""
    try:
        return models.decode(BlockClaim, entry).host
    except BadRecord:
        return None
