"""What every network type (bridge, macvlan, overlay) provides to NetworkService."""
from __future__ import annotations

from contextlib import ExitStack
from typing import Protocol

from driver.models import EndpointRecord, NetworkRecord


class NetworkKind(Protocol):
    def create_network(self, net: NetworkRecord, undo: ExitStack) -> NetworkRecord:
        """Make the kernel objects; register an undo for each; return the record to store."""

    def delete_network(self, net: NetworkRecord) -> None: ...

    def create_endpoint(self, net: NetworkRecord, ep: EndpointRecord,
                        undo: ExitStack) -> EndpointRecord | None:
        """Make the endpoint's link; return the record to store if the kind changed it."""

    def ensure_endpoint_ready(self, net: NetworkRecord, ep: EndpointRecord) -> None:
        """Before Join: the link named ep.peer_if exists in the host namespace."""

    def delete_endpoint(self, net: NetworkRecord | None, ep: EndpointRecord) -> None: ...

    def restore_network(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """Plugin start: re-create what is missing for a recorded network."""

    def owned_links(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> set[str]:
        """pynet-named links this network legitimately owns (the rest are orphans)."""
