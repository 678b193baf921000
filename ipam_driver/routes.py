"""/IpamDriver.* calls: decode the request (protocol.py), hand it to IpamService, encode."""
from __future__ import annotations

from typing import Any, Callable

from pynet_core.wire import Body

from .protocol import AddressRelease, AddressReply, AddressRequest, PoolRelease, PoolReply, PoolRequest
from .service import IpamService


def ipam_handlers(service: IpamService) -> dict[str, Callable[[Body], dict[str, Any]]]:
    def release_pool(b: Body) -> dict[str, Any]:
        service.release_pool(PoolRelease.decode(b).pool_id)
        return {}

    def release_address(b: Body) -> dict[str, Any]:
        req = AddressRelease.decode(b)
        service.release_address(req.pool_id, req.address)
        return {}

    return {
        "IpamDriver.GetCapabilities": lambda b: service.capabilities().encode(),
        "IpamDriver.GetDefaultAddressSpaces": lambda b: service.default_address_spaces().encode(),
        "IpamDriver.RequestPool": lambda b: PoolReply(service.request_pool(PoolRequest.decode(b))).encode(),
        "IpamDriver.ReleasePool": release_pool,
        "IpamDriver.RequestAddress":
            lambda b: AddressReply(service.request_address(AddressRequest.decode(b))).encode(),
        "IpamDriver.ReleaseAddress": release_address,
    }
