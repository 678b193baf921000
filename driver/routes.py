"""/NetworkDriver.* calls: decode, hand to NetworkService, answer."""
from __future__ import annotations

from typing import Callable

from pynet.wire import Body
from .service import CAPABILITIES, NetworkService

Handler = Callable[[Body], dict]


def network_handlers(service: NetworkService) -> dict[str, Handler]:
    return {
        "NetworkDriver.GetCapabilities": lambda b: dict(CAPABILITIES),
        "NetworkDriver.CreateNetwork": lambda b: service.create_network(
            b.id("NetworkID"), b.mapping("Options"), b.items("IPv4Data"), b.items("IPv6Data")),
        "NetworkDriver.DeleteNetwork": lambda b: service.delete_network(b.id("NetworkID")),
        "NetworkDriver.CreateEndpoint": lambda b: service.create_endpoint(
            b.id("NetworkID"), b.id("EndpointID"), b.mapping("Interface"), b.mapping("Options")),
        "NetworkDriver.DeleteEndpoint": lambda b: service.delete_endpoint(
            b.id("NetworkID"), b.id("EndpointID")),
        "NetworkDriver.EndpointOperInfo": lambda b: service.endpoint_info(
            b.id("NetworkID"), b.id("EndpointID")),
        "NetworkDriver.Join": lambda b: service.join(
            b.id("NetworkID"), b.id("EndpointID"), b.string("SandboxKey", required=True),
            b.mapping("Options")),
        "NetworkDriver.Leave": lambda b: service.leave(b.id("NetworkID"), b.id("EndpointID")),
        "NetworkDriver.ProgramExternalConnectivity": lambda b: service.program_external(
            b.id("NetworkID"), b.id("EndpointID"), b.mapping("Options")),
        "NetworkDriver.RevokeExternalConnectivity": lambda b: service.revoke_external(
            b.id("NetworkID"), b.id("EndpointID")),
        # Node discovery is for drivers that need peers from Docker; pynet uses its store.
        "NetworkDriver.DiscoverNew": lambda b: {},
        "NetworkDriver.DiscoverDelete": lambda b: {},
    }
