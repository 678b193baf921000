"""What every network type provides to NetworkService.

A kind owns everything that differs between types: the kernel objects it makes, what it
records about them (a bridge, a parent), what Join answers, whether it publishes ports, and
how it comes back after a restart. NetworkService holds no `if type ==`: it looks the kind
up by the record's type and calls it. A new type is one module here plus one line in
kinds/__init__.py. `others` is always this host's other recorded networks (of every
type), read by the service from the store: kinds keep no copy of their own.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Protocol

from driver.models import EndpointRecord, NetworkRecord
from driver.portmap import PortBinding, PortRequest
from driver.protocol import JoinAnswer


class NetworkKind(Protocol):
    def plan_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> NetworkRecord:
        """Check `net` against `others` and the kernel, and decide what to make (names, and
        which objects pynet will make rather than find): the record, written as the intent
        before any kernel work. No kernel change."""

    def create_network(self, net: NetworkRecord, undo: ExitStack) -> NetworkRecord:
        """Make the planned kernel objects (an undo for each); return the record to store."""

    def delete_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> None:
        """Remove what the record says pynet made (absent is fine: the record may be the
        intent of an interrupted create); never what others still use, never what pynet
        found."""

    def plan_endpoint(self, net: NetworkRecord, ep: EndpointRecord) -> EndpointRecord:
        """Decide the endpoint's links (its host_if) and a MAC it must use: the intent."""

    def create_endpoint(self, net: NetworkRecord, ep: EndpointRecord,
                        undo: ExitStack) -> EndpointRecord:
        """Make the planned links (an undo for each); return the record to store."""

    def delete_endpoint(self, net: NetworkRecord | None, ep: EndpointRecord) -> None:
        """Remove the endpoint's links (absent is fine); `net` is None when the network's
        record went first."""

    def join(self, net: NetworkRecord, ep: EndpointRecord, sandbox: str) -> JoinAnswer:
        """Make sure ep.peer_if exists for Docker to move into `sandbox` (it may be there
        already: a repeated Join), and say what the container gets (gateways, whether
        Docker may add docker_gwbridge). ep.sandbox is the sandbox of an earlier Join."""

    def publishes(self, net: NetworkRecord) -> bool:
        """Whether ProgramExternalConnectivity publishes ports on this network."""

    def publish(self, net: NetworkRecord, ep: EndpointRecord,
                requests: tuple[PortRequest, ...]) -> tuple[PortBinding, ...]:
        """Publish the ports (only called when publishes(net)); all or nothing."""

    def unpublish(self, net: NetworkRecord, ep: EndpointRecord) -> None: ...

    def restore_network(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """CreateNetwork replayed for a network already recorded: re-make what is missing."""

    def restore(self, networks: Sequence[NetworkRecord],
                endpoints: dict[str, list[EndpointRecord]]) -> None:
        """Plugin start: make the kernel match every recorded network of this kind (and
        drop what the kind installed for networks no longer recorded). Trouble with one
        network is logged, not raised: the others must still come back."""

    def owned_links(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> set[str]:
        """pynet-named links this network legitimately owns (the rest are orphans)."""


def gateway_answer(net: NetworkRecord, ep: EndpointRecord, *,
                   disable_gateway_service: bool = False) -> JoinAnswer:
    """The Join answer of a kind whose gateway is the network's own: the recorded gateways,
    none on an internal network."""
    gateways: dict[int, str] = {}
    if not net.options.internal:
        for gateway in net.gateways:
            ip = ipaddress.ip_interface(gateway).ip
            gateways[ip.version] = str(ip)
    return JoinAnswer(ep.peer_if, net.options.iface_prefix, gateways.get(4), gateways.get(6),
                      disable_gateway_service)


class PublishesNothing:
    """For kinds whose containers are reached without published ports (macvlan: addresses
    of their own on the wire; overlay: Docker's docker_gwbridge publishes)."""

    def publishes(self, net: NetworkRecord) -> bool:
        return False

    def publish(self, net: NetworkRecord, ep: EndpointRecord,
                requests: tuple[PortRequest, ...]) -> tuple[PortBinding, ...]:
        return ()

    def unpublish(self, net: NetworkRecord, ep: EndpointRecord) -> None:
        pass
