"""What every network type provides to NetworkService.

A kind owns everything that differs between types: the kernel objects it makes, what it
records about them (a bridge, a parent), what Join answers, whether it publishes ports, and
how it comes back after a restart. NetworkService holds no `if type ==`: it looks the kind
up by the record's type and calls it. A new type is one module here plus one line in
kinds/__init__.py. `others` is always this host's other recorded networks (of every
type), read by the service from the store: kinds keep no copy of their own.

The operator commands ask the kinds too, so that they hold no `if type ==` either: what
`pynet doctor` compares (check, owned_links) and what `pynet networks` and `status` show
(describe).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

from driver.firewall.audit import Difference
from driver.models import EndpointRecord, NetworkRecord
from driver.portmap import PortBinding, PortRequest
from driver.protocol import JoinAnswer

# The fix of a link that restore makes again.
RECREATE = "restart pynet (systemctl restart pynet): restore re-creates the links of ready networks"

# Endpoint ID -> Docker's name for its container (None: unknown). Called only for a fix that
# names a container: asking dockerd is slow, and doctor need not when all is fine.
ContainerName = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Carrier:
    """What carries a network on this host, as `pynet networks` and `status` show it:
    `device` is their DEVICE column (`bridge pn-…`, `parent eth0`, `vni 42`); `parent` the
    host interface the network sits on, for a kind that has one (their JSON's `parent`)."""
    device: str
    parent: str | None = None


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
        """The pynet-named links in the host namespace that this network and its endpoints
        account for; one named like pynet's that no network accounts for is reported by
        restore and by `pynet doctor` alike (all_owned_links), never removed."""

    def check(self, net: NetworkRecord, endpoints: list[EndpointRecord],
              container_name: ContainerName) -> list[Difference]:
        """`pynet doctor`: where the kernel (and for a network the hosts share, the store)
        disagrees with this ready network and its ready endpoints, each with its fix. Reads
        only. The kind checks what it made, so a new type brings its own checks."""

    def describe(self, net: NetworkRecord) -> Carrier:
        """What carries the network on this host (no kernel or store read)."""


def all_owned_links(kinds: Mapping[str, NetworkKind], networks: Iterable[NetworkRecord],
                    endpoints: Mapping[str, list[EndpointRecord]]) -> set[str]:
    """The links that these networks (by their kinds' owned_links) and their endpoints
    (`endpoints`: by network ID) account for. One set for restore and `pynet doctor`, so
    the two never disagree on which pynet-named link is nobody's."""
    owned: set[str] = set()
    for net in networks:
        kind = kinds.get(net.kind)
        if kind is not None:
            owned |= kind.owned_links(net, endpoints.get(net.id, []))
    return owned


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
