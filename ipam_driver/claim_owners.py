"""Who holds each address of a pool, for the overlay's check that a host only publishes
addresses it holds (the overlay's port: driver/kinds/overlay/claims.py, wired by pynet/app.py)."""
from __future__ import annotations

from pynet_core.store import bad_records, keys
from pynet_core.store.api import Store

from .models import AddressClaim, decode


class ClaimOwners:
    def __init__(self, store: Store) -> None:
        self.store = store

    def owners(self, space: str, pool: str) -> dict[str, tuple[str, int]]:
        """address -> (host, the claim record's version): the overlay's Owner."""
        found: dict[str, tuple[str, int]] = {}
        for entry in self.store.list(keys.ipam_addrs(space, pool)):
            for claim in bad_records.readable([entry], lambda e: decode(AddressClaim, e), "address claim"):
                if not claim.gateway:
                    found[keys.claimed_address(entry.key)] = (claim.host, entry.version)
        return found
