"""Published ports: Docker's `com.docker.network.portmap` into typed requests and bindings.

Pure: no I/O. A PortRequest is what the user asked for (`-p [HOSTIP:]HOSTPORT[-END]:PORT/PROTO`);
a PortBinding is what pynet installed for it (the host port chosen, the container address).
Both are kept in the endpoint record, so a restarted plugin re-installs the same ports.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from pynet.errors import BadRequest

PORTMAP = "com.docker.network.portmap"
# Docker's protocol numbers (types/types.go): 1 icmp, 6 tcp, 17 udp, 132 sctp.
PROTOCOLS = {6: "tcp", 17: "udp"}
_UNSUPPORTED = {1: "icmp", 132: "sctp"}
ANY_IPV4 = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class PortRequest:
    proto: str             # "tcp" | "udp"
    container_port: int
    host_ip: str           # an IPv4 address; "0.0.0.0" means every address of the host
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


def parse_portmap(options: dict, default_host_ip: str | None = None) -> tuple[PortRequest, ...]:
    """The portmap in ProgramExternalConnectivity's (or Join's) Options -> requests.

    Entries look like {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080,
    "HostPortEnd": 8080}. An empty HostIP means `default_host_ip` (the network's
    com.docker.network.bridge.host_binding_ipv4) or every address. Duplicates are dropped.
    """
    raw = options.get(PORTMAP) if isinstance(options, dict) else None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadRequest(f"{PORTMAP} must be a list of port bindings, got {type(raw).__name__}")
    requests: list[PortRequest] = []
    for entry in raw:
        request = _parse_entry(entry, default_host_ip or ANY_IPV4)
        if request not in requests:
            requests.append(request)
    return tuple(requests)


def _parse_entry(entry: Any, default_host_ip: str) -> PortRequest:
    if not isinstance(entry, dict):
        raise BadRequest(f"{PORTMAP} entries must be objects, got {entry!r}")
    proto_number = entry.get("Proto", 6)
    if proto_number in _UNSUPPORTED:
        raise BadRequest(f"cannot publish {_UNSUPPORTED[proto_number]} port {entry.get('Port')}: "
                         "pynet publishes tcp and udp ports only")
    if proto_number not in PROTOCOLS:
        raise BadRequest(f"{PORTMAP} entry {entry!r}: unknown protocol number {proto_number!r}")
    port = _port(entry, "Port", allow_zero=False)
    start = _port(entry, "HostPort", allow_zero=True)
    end = _port(entry, "HostPortEnd", allow_zero=True) or start
    if start == 0 and end != 0:
        raise BadRequest(f"{PORTMAP} entry {entry!r}: HostPortEnd without HostPort")
    if end < start:
        raise BadRequest(f"{PORTMAP} entry {entry!r}: host port range {start}-{end} is reversed")
    host_ip = entry.get("HostIP") or ""
    if not isinstance(host_ip, str):
        raise BadRequest(f"{PORTMAP} entry {entry!r}: HostIP must be a string")
    host_ip = host_ip or default_host_ip
    try:
        address = ipaddress.ip_address(host_ip)
    except ValueError:
        raise BadRequest(f"cannot publish port {port}: host address {host_ip!r} is not an IP "
                         "address") from None
    if address.version != 4:
        raise BadRequest(f"cannot publish port {port} on {host_ip}: pynet publishes ports on "
                         "IPv4 host addresses only")
    return PortRequest(PROTOCOLS[proto_number], port, str(address), start, end)


def _port(entry: dict, key: str, allow_zero: bool) -> int:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not (0 if allow_zero else 1) <= value <= 65535:
        raise BadRequest(f"{PORTMAP} entry {entry!r}: {key} must be a port number "
                         f"({'0-' if allow_zero else '1-'}65535), got {value!r}")
    return value
