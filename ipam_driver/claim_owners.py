"""Who holds each address of a pool, for the overlay's check that a host only publishes
addresses it holds (the overlay's port: driver/overlay/claims.py, wired by pynet/app.py)."""
from __future__ import annotations

from pynet.store import keys, rejected
from pynet.store.api import Store

from .models import AddressClaim, decode


class ClaimOwners:
    def __init__(self, store: Store) -> None:
        self.store = store

    def owners(self, space: str, pool: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for entry in self.store.list(keys.ipam_addrs(space, pool)):
            try:
                claim = decode(AddressClaim, entry)
            except (ValueError, RecursionError) as exc:
                rejected.report(entry.key, entry.version, "address-claim", str(exc))
                continue
            if not claim.gateway:
                found[keys.claimed_address(entry.key)] = claim.host
        return found
