"""dockerd's IPAM client, in process: each call is the JSON Docker sends, through
ipam_driver.routes (protocol decode -> IpamService -> encode), without Flask.

For tests that speak in Docker's terms (option dicts such as
{"com.docker.network.endpoint.name": "web"}, addresses as "10.1.0.2/24"): errors are raised
as the PynetError the plugin would answer with.
"""
from __future__ import annotations

import json
from typing import Any

from ipam_driver.pool_id import PoolId
from ipam_driver.routes import ipam_handlers
from ipam_driver.service import IpamService
from pynet_core.wire import Body


class DockerIpam:
    def __init__(self, service: IpamService) -> None:
        self.service = service
        self._handlers = ipam_handlers(service)
        self.host = service.host
        self.retries = service.retries
        self.release_leaked = service.release_leaked

    def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._handlers[f"IpamDriver.{method}"](Body(json.dumps(body).encode()))

    def request_pool(self, space: str, pool: str, subpool: str, options: dict[str, str],
                     v6: bool) -> tuple[PoolId, dict]:
        answer = self.call("RequestPool", {"AddressSpace": space, "Pool": pool, "SubPool": subpool,
                                           "Options": options, "V6": v6})
        return PoolId.parse(answer["PoolID"]), answer["Data"]

    def release_pool(self, pool_id: PoolId) -> None:
        assert self.call("ReleasePool", {"PoolID": str(pool_id)}) == {}

    def request_address(self, pool_id: PoolId, address: str, options: dict[str, str]) -> str:
        answer = self.call("RequestAddress", {"PoolID": str(pool_id), "Address": address,
                                              "Options": options})
        assert answer["Data"] == {}
        return answer["Address"]

    def release_address(self, pool_id: PoolId, address: str) -> None:
        assert self.call("ReleaseAddress", {"PoolID": str(pool_id), "Address": address}) == {}
