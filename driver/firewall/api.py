"""The one door to packet filtering: what a network needs, not how rules are spelled."""
from __future__ import annotations

from typing import Protocol

from driver.models import NetworkRecord


class Firewall(Protocol):
    def network_added(self, network: NetworkRecord) -> None:
        """Install what `network` needs (idempotent)."""

    def network_removed(self, network: NetworkRecord) -> None:
        """Remove everything installed for `network` (absent is fine)."""

    def sync(self, networks: list[NetworkRecord]) -> None:
        """Make the installed rules exactly those of `networks`: repair missing ones and
        drop ones for networks that no longer exist (plugin start)."""
