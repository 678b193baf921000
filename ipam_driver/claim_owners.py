"""Who holds each address of a pool, for the overlay's check that a host only publishes
addresses it holds (the overlay's port: driver/kinds/overlay/claims.py, wired by pynet/app.py)."""
from __future__ import annotations

from pynet_core.store import bad_records, keys, records
from pynet_core.store.api import Store

from .models import AddressClaim, decode


class ClaimOwners:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Per pool, the claims of its last listing, decoded: the overlay watcher asks at every
        # sync, and decoding every claim each time made a burst of N endpoints O(N^2)
        # (issue 22). Only claims whose text changed are decoded again.
        self._memos: dict[tuple[str, str], records.ParsedOnce[AddressClaim]] = {}

    def owners(self, space: str, pool: str) -> dict[str, tuple[str, int]]:
        """address -> (host, the claim record's version): the overlay's Owner."""
        memo = self._memos.get((space, pool))
        if memo is None:
            memo = self._memos.setdefault((space, pool), records.ParsedOnce(lambda e: decode(AddressClaim, e)))
        found: dict[str, tuple[str, int]] = {}
        entries = self.store.list(keys.ipam_addrs(space, pool))
        for entry in entries:
            for claim in bad_records.readable([entry], memo, "address claim"):
                if not claim.gateway:
                    found[keys.claimed_address(entry.key)] = (claim.host, entry.version)
        memo.keep({e.key for e in entries})
        return found
