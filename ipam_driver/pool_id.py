"""Self-describing pool IDs: '<address space>/<pool cidr>[/<sub-range cidr>]'.

Everything needed to interpret a pool ID is inside it, so ReleasePool and RequestAddress
never depend on an in-memory table that a restart would lose.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pynet.errors import BadRequest

from .allocator import Network


@dataclass(frozen=True, slots=True)
class PoolId:
    space: str
    pool: Network
    subpool: Network | None = None

    def __str__(self) -> str:
        text = f"{self.space}/{self.pool}"
        return f"{text}/{self.subpool}" if self.subpool else text

    @property
    def allocation_range(self) -> Network:
        return self.subpool or self.pool

    @classmethod
    def parse(cls, text: str, what: str = "pool ID") -> "PoolId":
        parts = text.split("/")
        try:
            if len(parts) == 3:
                return cls(parts[0], ipaddress.ip_network(f"{parts[1]}/{parts[2]}"))
            if len(parts) == 5:
                return cls(
                    parts[0],
                    ipaddress.ip_network(f"{parts[1]}/{parts[2]}"),
                    ipaddress.ip_network(f"{parts[3]}/{parts[4]}"),
                )
        except ValueError:
            pass
        raise BadRequest(f"{what} {text!r} was not issued by pynet (expected SPACE/CIDR[/RANGE])")
