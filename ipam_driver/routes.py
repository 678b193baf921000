"""/IpamDriver.* calls: decode, hand to IpamService, answer."""
from __future__ import annotations

from pynet.wire import Body

from .pool_id import PoolId
from .service import IpamService


def ipam_handlers(service: IpamService) -> dict:
    def request_pool(b: Body) -> dict:
        pool_id, data = service.request_pool(
            b.string("AddressSpace"), b.string("Pool"), b.string("SubPool"),
            b.strings("Options"), b.flag("V6"))
        return {"PoolID": str(pool_id), "Pool": str(pool_id.pool), "Data": data}

    def request_address(b: Body) -> dict:
        address = service.request_address(PoolId.parse(b.data.get("PoolID")),
                                          b.string("Address"), b.strings("Options"))
        return {"Address": address, "Data": {}}

    def release_pool(b: Body) -> dict:
        service.release_pool(PoolId.parse(b.data.get("PoolID")))
        return {}

    def release_address(b: Body) -> dict:
        service.release_address(PoolId.parse(b.data.get("PoolID")), b.string("Address", required=True))
        return {}

    return {
        "IpamDriver.GetCapabilities": lambda b: service.capabilities(),
        "IpamDriver.GetDefaultAddressSpaces": lambda b: service.default_address_spaces(),
        "IpamDriver.RequestPool": request_pool,
        "IpamDriver.ReleasePool": release_pool,
        "IpamDriver.RequestAddress": request_address,
        "IpamDriver.ReleaseAddress": release_address,
    }
