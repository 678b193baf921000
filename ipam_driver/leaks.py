"""Give back addresses that Docker no longer uses: the leaks a crash leaves behind.

Docker returns an address with ReleaseAddress and ignores a failure. If pynet is down at that
moment (killed between Docker's RequestAddress and CreateEndpoint, or between DeleteEndpoint
and ReleaseAddress), nothing would ever free the claim. Docker itself knows which addresses
its containers and networks use, so this host's claims are compared with what its dockerd
reports (docker_addresses.py).

A claim is released only when all of these hold:
- it was made by this host and is not a gateway (gateways go with their pool);
- this host's dockerd did not list its address in any check for at least GRACE seconds,
  longer than Docker's own retry window, so a CreateEndpoint that reaches pynet late still
  finds its address claimed;
- it is still exactly the claim first seen (same claim id and store version): the delete is
  conditional on the version, so a claim made again meanwhile is never touched.
When dockerd cannot be asked, nothing is released.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from pynet.defaults import DEFAULT_LEAK_GRACE
from pynet.store import keys
from pynet.store.api import Entry, Store

from . import models
from .allocator import Address
from .models import AddressClaim, claimed_ip

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Suspect:
    identity: tuple[str, int]  # (claim id, store version): the claim exactly as first seen
    since: float


class LeakCheck:
    def __init__(self, store: Store, host: str,
                 docker_addresses: Callable[[], set[Address] | None],
                 release: Callable[[Entry], bool], *, grace: float = DEFAULT_LEAK_GRACE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.host = host
        self.docker_addresses = docker_addresses
        self.release = release
        self.grace = grace
        self.clock = clock
        self._suspects: dict[str, _Suspect] = {}

    def check_once(self) -> list[str]:
        """One comparison; returns the keys of the claims released."""
        # The store first, Docker second: an address Docker reports was claimed before it was
        # reported, so a claim listed here cannot be missed for a container Docker lists.
        entries = self.store.list(keys.ipam_addrs_all())
        in_use = self.docker_addresses()
        if in_use is None:
            return []  # no word from Docker: no judgement
        now = self.clock()
        suspects: dict[str, _Suspect] = {}
        released: list[str] = []
        for entry, identity in self._own_claims(entries):
            if claimed_ip(entry) in in_use:
                continue
            seen = self._suspects.get(entry.key)
            since = seen.since if seen is not None and seen.identity == identity else now
            if now - since < self.grace:
                suspects[entry.key] = _Suspect(identity, since)
            elif self.release(entry):
                released.append(entry.key)
                log.warning("released address %s: claimed by this host (%s) but unknown to Docker "
                            "for %.0f s (a release Docker sent while pynet was down)",
                            keys.claimed_address(entry.key), self.host, now - since)
        self._suspects = suspects
        return released

    def _own_claims(self, entries: Iterable[Entry]) -> Iterable[tuple[Entry, tuple[str, int]]]:
        for entry in entries:
            try:
                claim = models.decode(AddressClaim, entry)
            except ValueError as exc:
                log.error("ignoring unreadable address claim %s: %s", entry.key, exc)
                continue
            if claim.host == self.host and not claim.gateway:
                yield entry, (claim.claim or "", entry.version)

    def run(self, interval: float, stop: threading.Event) -> None:
        """Check every INTERVAL seconds until STOP is set; a failed check is logged, not fatal."""
        while not stop.wait(interval):
            try:
                self.check_once()
            except Exception as exc:  # the store or Docker away: try again next time
                log.warning("leak check failed, retrying in %.0f s: %s", interval, exc)

    def start(self, interval: float) -> threading.Event:
        stop = threading.Event()
        threading.Thread(target=self.run, args=(interval, stop), name="pynet-leak-check",
                         daemon=True).start()
        return stop

