"""What the overlay's watcher reads besides the overlay's records, as ports the composition
root (pynet/app.py) wires: the IPAM's address claims (driver/ never imports ipam_driver/,
tests/unit/test_layering.py: the implementation is ipam_driver/claim_owners.py), and this
host's own network and endpoint records (driver/ledger.py)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from driver.models import EndpointRecord, NetworkRecord


class Owner(NamedTuple):
    """The host whose claim an address is, and the store version its claim record has had
    since it last changed (versions are comparable across keys: pynet_core/store/api.py)."""
    host: str
    since: int = 0


class AddressClaims(Protocol):
    def owners(self, space: str, pool: str) -> Mapping[str, Owner]:
        """Every address claimed in `pool` of `space` for a container or an --aux-address
        (gateways, which every host of a network shares, left out) -> its Owner. Unreadable
        claims are left out. BackendUnavailable when the store is down."""


class LocalRecords(Protocol):
    def networks(self) -> list[NetworkRecord]: ...

    def endpoints(self, nid: str | None = None) -> list[EndpointRecord]: ...
