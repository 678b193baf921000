"""Self-describing pool IDs: '<address space>/<pool cidr>[/<sub-range cidr>][@<hold id>]'.

Everything needed to interpret a pool ID is inside it, so ReleasePool and RequestAddress
never depend on an in-memory table that a restart would lose. The hold id names the one
hold RequestPool made (models.PoolEntry.holds), so ReleasePool removes exactly that hold
however often it is repeated. Pool IDs issued before hold ids (no '@...') still work.

Parsing is strict: a pool ID must be exactly what pynet writes (canonical CIDRs, nothing
before or after), because a PoolID is client input and a lenient parse once let
'SPACE/CIDR<garbage>' release the live pool. The sub-range a PoolID names is only a claim:
callers check it against the pool's record (pools.Pools.entry_for).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pynet_core.errors import BadRequest
from pynet_core.wire import printable

from .allocator import Network

_CIDR = r"[0-9A-Fa-f.:]{2,45}/[0-9]{1,3}"
HOLD_PATTERN = r"[0-9a-f]{16}"
_POOL_ID = re.compile(rf"([A-Za-z][A-Za-z0-9_.-]{{0,63}})/({_CIDR})(?:/({_CIDR}))?(?:@({HOLD_PATTERN}))?",
                      re.ASCII)


@dataclass(frozen=True, slots=True)
class PoolId:
    space: str
    pool: Network
    subpool: Network | None = None
    hold: str | None = None  # None: issued before hold ids

    def __str__(self) -> str:
        text = f"{self.space}/{self.pool}"
        if self.subpool:
            text += f"/{self.subpool}"
        return f"{text}@{self.hold}" if self.hold else text

    @property
    def allocation_range(self) -> Network:
        return self.subpool or self.pool

    @classmethod
    def parse(cls, text: str, what: str = "pool ID") -> "PoolId":
        match = _POOL_ID.fullmatch(text)
        if match is not None:
            space, pool, sub, hold = match.groups()
            try:
                parsed = cls(space, ipaddress.ip_network(pool),
                             ipaddress.ip_network(sub) if sub else None, hold)
            except ValueError:
                parsed = None
            # Only the canonical spelling pynet issued: no leading zeros, no odd case.
            if parsed is not None and str(parsed) == text:
                return parsed
        raise BadRequest(f"{what} {printable(text)} was not issued by pynet "
                         "(expected SPACE/CIDR[/RANGE][@HOLD])")
