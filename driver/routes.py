"""/NetworkDriver.* calls: decode the request, hand it to NetworkService, encode the answer."""
from __future__ import annotations

from typing import Callable

from pynet.wire import Body

from .protocol import (CAPABILITIES, CreateEndpoint, CreateNetwork, EndpointCall, Join,
                       NetworkCall, ProgramExternal)
from .service import NetworkService

Handler = Callable[[Body], dict]


def network_handlers(service: NetworkService) -> dict[str, Handler]:
    def done(_result: None) -> dict:
        return {}

    return {
        "NetworkDriver.GetCapabilities": lambda b: dict(CAPABILITIES),
        "NetworkDriver.CreateNetwork": lambda b: done(service.create_network(
            CreateNetwork.decode(b, tuple(service.kinds)))),
        "NetworkDriver.DeleteNetwork": lambda b: done(service.delete_network(NetworkCall.decode(b))),
        "NetworkDriver.CreateEndpoint": lambda b: service.create_endpoint(
            CreateEndpoint.decode(b)).to_wire(),
        "NetworkDriver.DeleteEndpoint": lambda b: done(service.delete_endpoint(EndpointCall.decode(b))),
        "NetworkDriver.EndpointOperInfo": lambda b: service.endpoint_info(
            EndpointCall.decode(b)).to_wire(),
        "NetworkDriver.Join": lambda b: service.join(Join.decode(b)).to_wire(),
        "NetworkDriver.Leave": lambda b: done(service.leave(EndpointCall.decode(b))),
        "NetworkDriver.ProgramExternalConnectivity": lambda b: done(
            service.program_external(ProgramExternal.decode(b))),
        "NetworkDriver.RevokeExternalConnectivity": lambda b: done(
            service.revoke_external(EndpointCall.decode(b))),
        # Node discovery is for drivers that need peers from Docker; pynet uses its store.
        "NetworkDriver.DiscoverNew": lambda b: {},
        "NetworkDriver.DiscoverDelete": lambda b: {},
    }
