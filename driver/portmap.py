"""Published ports as pynet models them: what was asked, and what was installed.

Pure: no I/O (the wire format is decoded in driver/protocol.py). A PortRequest is what the user asked for (`-p [HOSTIP:]HOSTPORT[-END]:PORT/PROTO`);
a PortBinding is what pynet installed for it (the host port chosen, the container address).
Both are kept in the endpoint record, so a restarted plugin re-installs the same ports.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

ANY_IPV4 = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class PortRequest:
    proto: str             # "tcp" | "udp"
    container_port: int
    host_ip: str           # an IPv4 address; "0.0.0.0": every address; "": the network's default
    host_port_start: int   # 0: any free port
    host_port_end: int     # == start for one port; start..end: the first free port in range

    def describe(self) -> str:
        ports = (str(self.host_port_start) if self.host_port_start == self.host_port_end
                 else f"{self.host_port_start}-{self.host_port_end}")
        return f"{self.host_ip}:{ports if self.host_port_start else 'any'}->{self.container_port}/{self.proto}"


@dataclass(frozen=True, slots=True)
class PortBinding:
    proto: str
    container_ip: str
    container_port: int
    host_ip: str
    host_port: int         # the port in use (never 0)
    host_port_start: int   # the request it answers (for idempotent replays)
    host_port_end: int

    @property
    def request(self) -> PortRequest:
        return PortRequest(self.proto, self.container_port, self.host_ip,
                           self.host_port_start, self.host_port_end)

    def describe(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_ip}:{self.container_port}/{self.proto}"

    def overlaps(self, proto: str, host_ip: str, host_port: int) -> bool:
        """Would binding host_ip:host_port/proto clash with this one? 0.0.0.0 is every address."""
        if (self.proto, self.host_port) != (proto, host_port):
            return False
        return self.host_ip == host_ip or ANY_IPV4 in (self.host_ip, host_ip)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PortBinding":
        return cls(**data)


def resolve_host_ips(requests: tuple[PortRequest, ...],
                     default_host_ip: str | None) -> tuple[PortRequest, ...]:
    """Requests with no host address get the network's default (its
    com.docker.network.bridge.host_binding_ipv4) or every address; duplicates are dropped."""
    resolved: list[PortRequest] = []
    for request in requests:
        if not request.host_ip:
            request = replace(request, host_ip=default_host_ip or ANY_IPV4)
        if request not in resolved:
            resolved.append(request)
    return tuple(resolved)
