"""Published ports as pynet models them: what was asked, and what was installed.

Pure: no I/O (the wire format is decoded in driver/protocol.py). A PortRequest is what the user asked for (`-p [HOSTIP:]HOSTPORT[-END]:PORT/PROTO`);
a PortBinding is what pynet installed for it (the host port chosen, the container address).
Both are kept in the endpoint record, so a restarted plugin re-installs the same ports.

Both address families, as Docker 27+ publishes them: a request with no host address (or
0.0.0.0) becomes one request per family the container has an address of, 0.0.0.0 and ::,
which then share one host port (resolve_host_ips).
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, replace

from pynet_core.errors import BadRequest

ANY_IPV4 = "0.0.0.0"
ANY_IPV6 = "::"
ANY = {4: ANY_IPV4, 6: ANY_IPV6}


@dataclass(frozen=True, slots=True)
class PortRequest:
    proto: str             # "tcp" | "udp"
    container_port: int
    host_ip: str           # an address; "0.0.0.0"/"::": every address of that family;
                           # "": the network's default (resolve_host_ips)
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
    # Docker's routed gateway mode: no host port and no DNAT; the container port is open
    # at the container's own address (host_port then repeats the container port).
    routed: bool = False

    @property
    def request(self) -> PortRequest:
        return PortRequest(self.proto, self.container_port, self.host_ip,
                           self.host_port_start, self.host_port_end)

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.container_ip).version

    def describe(self) -> str:
        if self.routed:
            return f"{_bracket(self.container_ip)}:{self.container_port}/{self.proto} (routed)"
        return (f"{_bracket(self.host_ip)}:{self.host_port}->{_bracket(self.container_ip)}:"
                f"{self.container_port}/{self.proto}")

    def overlaps(self, proto: str, host_ip: str, host_port: int) -> bool:
        """Would binding host_ip:host_port/proto clash with this one? 0.0.0.0 (::) is every
        address of its family."""
        if (self.proto, self.host_port) != (proto, host_port):
            return False
        if _family(self.host_ip) != _family(host_ip):
            return False
        return self.host_ip == host_ip or ANY[_family(host_ip)] in (self.host_ip, host_ip)

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.routed:
            del data["routed"]  # records of nat bindings stay as older pynets wrote and read them
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PortBinding":
        return cls(**data)


def resolve_host_ips(requests: tuple[PortRequest, ...], default_host_ip: str | None,
                     families: frozenset[int] | set[int] = frozenset({4})) -> tuple[PortRequest, ...]:
    """Each request with its host address made concrete, for the address families the
    container has (FAMILIES: 4 and/or 6), duplicates dropped.

    No host address means the network's default (com.docker.network.bridge.host_binding_ipv4)
    or else every address; every address (no address, 0.0.0.0) means both families, as
    Docker 27+ publishes: 0.0.0.0 and ::, each only if the container has an address of that
    family. A given address of a family the container has no address of is refused."""
    resolved: list[PortRequest] = []
    for request in requests:
        host_ip = request.host_ip or default_host_ip or ANY_IPV4
        if host_ip == ANY_IPV4:
            wanted = [ANY[f] for f in (4, 6) if f in families]
        else:
            family = _family(host_ip)
            if family not in families:
                raise BadRequest(f"cannot publish port {request.container_port}/{request.proto} on "
                                 f"{host_ip}: the container has no IPv{family} address on this network")
            wanted = [host_ip]
        if not wanted:
            raise BadRequest(f"cannot publish port {request.container_port}/{request.proto}: the "
                             "container has no address on this network")
        for ip in wanted:
            one = replace(request, host_ip=ip)
            if one not in resolved:
                resolved.append(one)
    return tuple(resolved)


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address
