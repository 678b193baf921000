"""/NetworkDriver.* calls: decode the request, hand it to NetworkService, encode the answer."""
from __future__ import annotations

from typing import Callable

from pynet_core.wire import Body

from .protocol import (AllocateNetwork, CreateEndpoint, CreateNetwork, EndpointCall, Join,
                       NetworkCall, ProgramExternal, capabilities)
from .service import NetworkService
from .swarm import SwarmNetworks

Handler = Callable[[Body], dict]


def network_handlers(service: NetworkService, scope: str = "local",
                     swarm: SwarmNetworks | None = None) -> dict[str, Handler]:
    def done(_result: None) -> dict:
        return {}

    caps = capabilities(scope)
    swarm = swarm or SwarmNetworks(tuple(service.kinds), None)
    return {
        "NetworkDriver.GetCapabilities": lambda b: dict(caps),
        # Swarm managers call these for global-scope drivers only (driver/swarm.py).
        "NetworkDriver.AllocateNetwork": lambda b: swarm.allocate(AllocateNetwork.decode(b)).to_wire(),
        "NetworkDriver.FreeNetwork": lambda b: done(swarm.free(NetworkCall.decode(b))),
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
