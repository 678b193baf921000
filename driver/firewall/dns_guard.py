"""pynet DNS's firewall (dns_rules.py) kept in step with the interfaces containers ask from:
the bridges of this host's pynet bridge networks and docker_gwbridge's bridge."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from .dns_rules import delete, script
from .forward_accept import FirewallError
from .nft import Nft

log = logging.getLogger(__name__)


class DnsGuard:
    def __init__(self, served: Iterable[tuple[str, int]], allow_from: Iterable[str] = (),
                 nft: Nft | None = None) -> None:
        self.served = tuple(served)
        self.allow_from = tuple(allow_from)
        self._nft = nft
        self._lock = threading.Lock()
        self.interfaces: frozenset[str] | None = None  # as last installed

    @property
    def nft(self) -> Nft:
        if self._nft is None:
            self._nft = Nft()
        return self._nft

    def update(self, interfaces: Iterable[str]) -> bool:
        """Install the rules for these interfaces unless they are installed already; False
        (logged) when nft refuses."""
        wanted = frozenset(interfaces)
        with self._lock:
            if wanted == self.interfaces:
                return True
            try:
                self.nft.apply(script(self.served, wanted, self.allow_from))
            except (FirewallError, ValueError) as exc:
                log.error("DNS: the firewall rules for %s could not be installed: %s",
                          ", ".join(f"{h}:{p}" for h, p in self.served), exc)
                return False
            self.interfaces = wanted
            return True

    def remove(self, quiet: bool = False) -> None:
        """Delete the table (absent is fine); `quiet`: say nothing if nft cannot."""
        with self._lock:
            try:
                self.nft.apply(delete())
            except FirewallError as exc:
                if not quiet:
                    log.warning("DNS: its firewall table could not be removed: %s", exc)
            self.interfaces = None
