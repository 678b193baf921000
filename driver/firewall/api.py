"""The one door to packet filtering: what a network needs, not how rules are spelled."""
from __future__ import annotations

from typing import Iterable, Protocol

from driver.models import EndpointRecord, NetworkRecord
from driver.portmap import PortBinding, PortRequest


class Firewall(Protocol):
    def network_added(self, network: NetworkRecord) -> None:
        """Install what `network` needs (idempotent)."""

    def network_removed(self, network: NetworkRecord) -> None:
        """Remove everything installed for `network` (absent is fine)."""

    def publish(self, network: NetworkRecord, endpoint: EndpointRecord,
                requests: Iterable[PortRequest]) -> tuple[PortBinding, ...]:
        """Publish the endpoint's ports (ProgramExternalConnectivity); returns the bindings
        with the host ports chosen. All or nothing: a host port in use raises Conflict and
        leaves nothing. An endpoint already published must be unpublished first."""

    def unpublish(self, network: NetworkRecord, endpoint: EndpointRecord) -> None:
        """Remove the endpoint's published ports (absent is fine)."""

    def sync(self, networks: list[NetworkRecord], endpoints: Iterable[EndpointRecord] = ()) -> None:
        """Make the installed rules exactly those of `networks` and of the ports recorded in
        `endpoints`: repair missing ones and drop ones for networks that no longer exist
        (plugin start). Networks of a type with no rules (macvlan) are ignored."""
