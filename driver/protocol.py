"""The NetworkDriver half of Docker's plugin protocol: typed requests in, typed answers out.

The only module of the network driver that knows Docker's field names (libnetwork's
drivers/remote/api). Each request type decodes itself from a `pynet_core.wire.Body` and refuses
a malformed field with BadRequest naming it; each response type encodes itself with
`to_wire()`. NetworkService takes and returns these types only.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from pynet_core.errors import BadRequest
from pynet_core.store.segments import segment_problem
from pynet_core.wire import Body, printable

from .options import NetworkOptions, parse_network_options
from .portmap import ANY_IPV4, PortRequest

PORTMAP = "com.docker.network.portmap"
EXPOSED_PORTS = "com.docker.network.endpoint.exposedports"
# An exact name for the container's interface (`docker run --network name=N,driver-opt=...`,
# Compose's interface_name). Docker's remote-driver proxy passes only Join's DstPrefix on
# (drivers/remote/driver.go: SetNames(SrcName, DstPrefix, "")), so no remote driver can honour it.
IFNAME = "com.docker.network.endpoint.ifname"
# Docker's protocol numbers (types/types.go): 1 icmp, 6 tcp, 17 udp, 132 sctp.
PROTOCOLS = {6: "tcp", 17: "udp"}
_UNSUPPORTED = {1: "icmp", 132: "sctp"}
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")

# Where the data of a network lives (Scope): "local", each host makes its own networks;
# "global", a Swarm manager allocates the network (AllocateNetwork, and every address through
# the IPAM) and the nodes create it with what it returned (docs/swarm.md). Containers may
# reach beyond the host either way (ConnectivityScope global).
SCOPES = ("local", "global")


def capabilities(scope: str = "local") -> dict:
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")
    # No GwAllocChecker (Docker 28+; absent means false): every pynet network has its gateway
    # from the IPAM, so Docker need not ask /NetworkDriver.GwAllocCheck whether to skip it.
    return {"Scope": scope, "ConnectivityScope": "global"}


# --- CreateNetwork -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateNetwork:
    network_id: str
    options: NetworkOptions
    gateways: tuple[str, ...]  # CIDR, e.g. "10.1.0.1/24"
    subnets: tuple[str, ...]
    address_space: str = ""  # the IPv4 pool's address space ("" when Docker sent none)

    @classmethod
    def decode(cls, body: Body, available: tuple[str, ...] | None = None) -> "CreateNetwork":
        """`available`: the network types the plugin serves (default: every implemented one)."""
        network_id = body.id("NetworkID")
        mapping = body.mapping("Options")
        options = parse_network_options(mapping) if available is None else \
            parse_network_options(mapping, available)
        v4 = body.items("IPv4Data")
        gateways, subnets = _ipam_data(v4 + body.items("IPv6Data"))
        if not options.ipv4 and any(ipaddress.ip_network(s).version == 4 for s in subnets):
            raise BadRequest("IPv4Data carries an IPv4 subnet but com.docker.network.enable_ipv4 is false")
        return cls(network_id, options, gateways, subnets, _address_space(v4))


def _address_space(entries: list) -> str:
    spaces = set()
    for entry in entries:
        space = entry.get("AddressSpace") if isinstance(entry, dict) else None
        if space is not None and not isinstance(space, str):
            raise BadRequest(f"IPv4Data AddressSpace must be a string, got {printable(space)}")
        if space:
            # It becomes a store key level of an overlay's records (pynet_core/store/segments.py).
            problem = segment_problem(space)
            if problem is not None:
                raise BadRequest(f"IPv4Data AddressSpace {printable(space)} is not a valid address "
                                 f"space name: {problem}")
            spaces.add(space)
    if len(spaces) > 1:
        raise BadRequest("IPv4Data names more than one address space: "
                         f"{printable(', '.join(sorted(spaces)))}")
    return next(iter(spaces), "")


def _ipam_data(entries: list) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Gateways (CIDR) and subnets from CreateNetwork's IPv4Data/IPv6Data."""
    gateways, subnets = [], []
    for data in entries:
        if not isinstance(data, dict):
            raise BadRequest(f"IPAM data entries must be objects, got {printable(data)}")
        pool = data.get("Pool") or ""
        gateway = data.get("Gateway") or ""
        if not isinstance(pool, str) or not isinstance(gateway, str):
            raise BadRequest(f"IPAM data {printable(data)}: Pool and Gateway must be strings")
        try:
            net = ipaddress.ip_network(pool, strict=False) if pool else None
            gw = ipaddress.ip_interface(gateway) if gateway else None
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"IPAM data {printable(data)} is not valid: {exc}") from None
        if net is not None and net.prefixlen == 0:
            continue  # --ipam-driver null sends 0.0.0.0/0: there is no subnet to serve
        if net is not None:
            subnets.append(str(net))
        if gw is not None and gw.network.prefixlen > 0:
            gateways.append(str(gw))
    return tuple(gateways), tuple(subnets)


# --- AllocateNetwork / FreeNetwork (Swarm managers, global scope) ----------------------
@dataclass(frozen=True, slots=True)
class AllocateNetwork:
    """A Swarm manager allocating a network: the driver options of `docker network create`
    (a flat map of strings, not CreateNetwork's generic object) and the pools Swarm's IPAM
    allocation gave it."""
    network_id: str
    options: dict[str, str]
    gateways: tuple[str, ...]
    subnets: tuple[str, ...]
    address_space: str = ""

    @classmethod
    def decode(cls, body: Body) -> "AllocateNetwork":
        network_id = body.id("NetworkID")
        options = body.strings("Options")
        v4 = body.items("IPv4Data")
        gateways, subnets = _ipam_data(v4 + body.items("IPv6Data"))
        return cls(network_id, dict(options), gateways, subnets, _address_space(v4))


@dataclass(frozen=True, slots=True)
class AllocateNetworkAnswer:
    """What Swarm keeps as the network's driver state and hands, as the generic options of
    CreateNetwork, to every node that gets a task on it."""
    options: dict[str, str]

    def to_wire(self) -> dict:
        return {"Options": dict(self.options)}


@dataclass(frozen=True, slots=True)
class NetworkCall:
    """A call that names one network: DeleteNetwork."""
    network_id: str

    @classmethod
    def decode(cls, body: Body) -> "NetworkCall":
        return cls(body.id("NetworkID"))


@dataclass(frozen=True, slots=True)
class EndpointCall:
    """A call that names one endpoint: DeleteEndpoint, EndpointOperInfo, Leave,
    RevokeExternalConnectivity."""
    network_id: str
    endpoint_id: str

    @classmethod
    def decode(cls, body: Body) -> "EndpointCall":
        return cls(body.id("NetworkID"), body.id("EndpointID"))


# --- CreateEndpoint ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateEndpoint:
    network_id: str
    endpoint_id: str
    address: str        # CIDR or ""
    address_v6: str     # CIDR or ""
    mac: str            # "" when Docker leaves the choice to the driver
    options: dict       # endpoint options worth keeping (published and exposed ports)

    @classmethod
    def decode(cls, body: Body) -> "CreateEndpoint":
        network_id, endpoint_id = body.id("NetworkID"), body.id("EndpointID")
        interface = body.mapping("Interface")
        address = _cidr(interface, "Address", 4)
        address_v6 = _cidr(interface, "AddressIPv6", 6)
        mac = interface.get("MacAddress") or ""
        if not isinstance(mac, str) or (mac and not _MAC.match(mac)):
            raise BadRequest(f"Interface.MacAddress {printable(mac)} is not a MAC address "
                             "(six hex pairs separated by colons)")
        options = body.mapping("Options")
        if options.get(IFNAME):
            raise BadRequest(f"endpoint option {IFNAME}={printable(options[IFNAME])} cannot be honoured: "
                             "Docker passes a remote driver's containers only an interface name prefix "
                             "(the network option com.docker.network.container_iface_prefix sets it)")
        keep = {k: options[k] for k in (PORTMAP, EXPOSED_PORTS) if k in options}
        return cls(network_id, endpoint_id, address, address_v6, mac, keep)


def _cidr(interface: dict, field: str, version: int) -> str:
    value = interface.get(field) or ""
    if not value:
        return ""
    try:
        if not isinstance(value, str):  # ip_interface would take 7 for 0.0.0.7
            raise TypeError
        parsed = ipaddress.ip_interface(value)
    except (ValueError, TypeError):
        raise BadRequest(f"Interface.{field} {printable(value)} is not an address in CIDR "
                         "form") from None
    if parsed.version != version:
        raise BadRequest(f"Interface.{field} {printable(value)} is not an IPv{version} address")
    return value


@dataclass(frozen=True, slots=True)
class CreateEndpointAnswer:
    mac: str | None  # the MAC pynet chose, when Docker left it empty

    def to_wire(self) -> dict:
        # Only fields Docker left empty may be answered (else it rolls the endpoint back).
        return {"Interface": {"MacAddress": self.mac}} if self.mac else {}


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    interface: str
    mac: str

    def to_wire(self) -> dict:
        return {"Value": {"interface": self.interface, "mac": self.mac}}


# --- Join ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Join:
    network_id: str
    endpoint_id: str
    sandbox_key: str

    @classmethod
    def decode(cls, body: Body) -> "Join":
        body.mapping("Options")  # must be an object if present; nothing in it is used
        return cls(body.id("NetworkID"), body.id("EndpointID"),
                   body.string("SandboxKey", required=True))


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    interface: str           # the link Docker moves into the sandbox
    prefix: str              # its name there: prefix + index
    gateway: str | None = None
    gateway_v6: str | None = None
    # True: never connect the container to Docker's docker_gwbridge for a way out.
    disable_gateway_service: bool = False

    def to_wire(self) -> dict:
        answer: dict[str, Any] = {"InterfaceName": {"SrcName": self.interface,
                                                    "DstPrefix": self.prefix}}
        if self.disable_gateway_service:
            answer["DisableGatewayService"] = True
        if self.gateway:
            answer["Gateway"] = self.gateway
        if self.gateway_v6:
            answer["GatewayIPv6"] = self.gateway_v6
        return answer


# --- ProgramExternalConnectivity -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProgramExternal:
    network_id: str
    endpoint_id: str
    # As asked; a host_ip of "" means the network's default (resolve_host_ips).
    ports: tuple[PortRequest, ...]

    @classmethod
    def decode(cls, body: Body) -> "ProgramExternal":
        network_id, endpoint_id = body.id("NetworkID"), body.id("EndpointID")
        return cls(network_id, endpoint_id, _portmap(body.mapping("Options"), ""))


def parse_portmap(options: dict, default_host_ip: str | None = None) -> tuple[PortRequest, ...]:
    """The portmap in ProgramExternalConnectivity's (or Join's) Options -> requests.

    Entries look like {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080,
    "HostPortEnd": 8080}. An empty HostIP means `default_host_ip` (the network's
    com.docker.network.bridge.host_binding_ipv4) or every address. Duplicates are dropped.
    """
    return _portmap(options, default_host_ip or ANY_IPV4)


def _portmap(options: dict, default_host_ip: str) -> tuple[PortRequest, ...]:
    raw = options.get(PORTMAP) if isinstance(options, dict) else None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadRequest(f"{PORTMAP} must be a list of port bindings, got {type(raw).__name__}")
    requests: list[PortRequest] = []
    for entry in raw:
        request = _port_entry(entry, default_host_ip)
        if request not in requests:
            requests.append(request)
    return tuple(requests)


def _port_entry(entry: Any, default_host_ip: str) -> PortRequest:
    if not isinstance(entry, dict):
        raise BadRequest(f"{PORTMAP} entries must be objects, got {printable(entry)}")
    proto_number = entry.get("Proto", 6)
    if isinstance(proto_number, bool) or not isinstance(proto_number, int):
        raise BadRequest(f"{PORTMAP} entry {printable(entry)}: Proto must be a protocol number, "
                         f"got {printable(proto_number)}")
    if proto_number in _UNSUPPORTED:
        raise BadRequest(f"cannot publish {_UNSUPPORTED[proto_number]} port {entry.get('Port')}: "
                         "pynet publishes tcp and udp ports only")
    if proto_number not in PROTOCOLS:
        raise BadRequest(f"{PORTMAP} entry {printable(entry)}: unknown protocol number {printable(proto_number)}")
    port = _port(entry, "Port", allow_zero=False)
    start = _port(entry, "HostPort", allow_zero=True)
    end = _port(entry, "HostPortEnd", allow_zero=True) or start
    if start == 0 and end != 0:
        raise BadRequest(f"{PORTMAP} entry {printable(entry)}: HostPortEnd without HostPort")
    if end < start:
        raise BadRequest(f"{PORTMAP} entry {printable(entry)}: host port range {start}-{end} is reversed")
    host_ip = entry.get("HostIP") or ""
    if not isinstance(host_ip, str):
        raise BadRequest(f"{PORTMAP} entry {printable(entry)}: HostIP must be a string")
    host_ip = host_ip or default_host_ip
    if host_ip:
        try:
            address = ipaddress.ip_address(host_ip)
        except ValueError:
            raise BadRequest(f"cannot publish port {port}: host address {printable(host_ip)} is not an IP "
                             "address") from None
        if address.version == 6 and address.is_loopback:
            # Connections from ::1 cannot be DNAT'd to a container: the kernel drops the
            # replies (IPv6 has no route_localnet), so Docker needs docker-proxy for them.
            raise BadRequest(f"cannot publish port {port} on ::1: IPv6 loopback cannot be "
                             "forwarded to a container in the kernel and pynet runs no userland "
                             "proxy; publish on 127.0.0.1, on [::] or on another IPv6 address of "
                             "the host")
        if address.version == 6 and address.ipv4_mapped is not None:
            raise BadRequest(f"cannot publish port {port} on {host_ip}: give the IPv4 address "
                             f"{address.ipv4_mapped} instead")
        host_ip = str(address)
    return PortRequest(PROTOCOLS[proto_number], port, host_ip, start, end)


def _port(entry: dict, key: str, allow_zero: bool) -> int:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not (0 if allow_zero else 1) <= value <= 65535:
        raise BadRequest(f"{PORTMAP} entry {printable(entry)}: {key} must be a port number "
                         f"({'0-' if allow_zero else '1-'}65535), got {printable(value)}")
    return value


