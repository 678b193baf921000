"""Docker's IpamDriver calls as typed requests and replies: the only place in ipam_driver
that knows Docker's field and option names.

Each request's decode() reads a pynet_core.wire.Body and fails with a 400 naming the field (or,
for a value of the wrong form, what it is: "subnet", "IP range", "address"); each reply's
encode() gives the JSON dict Docker reads. Specification: moby's libnetwork/ipams/remote/api.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pynet_core.errors import BadRequest
from pynet_core.wire import Body

from .allocator import Address, Interface, Network
from .models import AUX, ENDPOINT, GATEWAY
from .pool_id import PoolId

# RequestAddress options: what the address is for, and which container it goes to.
REQUEST_TYPE = "RequestAddressType"
GATEWAY_TYPE = "com.docker.network.gateway"
ENDPOINT_NAME = "com.docker.network.endpoint.name"


def parse_network(text: str, what: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise BadRequest(f"{what} {text!r} is not a valid CIDR subnet ({exc})") from None
        raise BadRequest(f"{what} {text!r} has host bits set; did you mean {loose}?") from None


def parse_address(text: str, what: str) -> Address:
    # Docker sends bare addresses, but accept a prefix length too: it carries no meaning here.
    try:
        return ipaddress.ip_interface(text).ip
    except ValueError:
        raise BadRequest(f"{what} {text!r} is not a valid IP address") from None


def _pool_id(body: Body) -> PoolId:
    return PoolId.parse(body.string("PoolID", required=True), "PoolID")


# --- GetCapabilities / GetDefaultAddressSpaces (no request body) -------------------------
@dataclass(frozen=True, slots=True)
class Capabilities:
    requires_mac: bool
    requires_replay: bool

    def encode(self) -> dict[str, Any]:
        return {"RequiresMACAddress": self.requires_mac, "RequiresRequestReplay": self.requires_replay}


@dataclass(frozen=True, slots=True)
class DefaultSpaces:
    local: str
    global_: str

    def encode(self) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": self.local, "GlobalDefaultAddressSpace": self.global_}


# --- RequestPool / ReleasePool -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PoolRequest:
    space: str  # "": Docker left it to the driver
    pool: Network | None = None  # None: choose one
    subpool: Network | None = None  # the range addresses come from; None: the whole pool
    options: dict[str, str] = field(default_factory=dict)  # --ipam-opt (see options.py)
    v6: bool = False

    @classmethod
    def decode(cls, body: Body) -> "PoolRequest":
        space, pool, subpool = body.string("AddressSpace"), body.string("Pool"), body.string("SubPool")
        options, v6 = body.strings("Options"), body.flag("V6")
        if subpool and not pool:
            raise BadRequest(f"an IP range ({subpool}) needs a subnet to go with it")
        return cls(space, parse_network(pool, "subnet") if pool else None,
                   parse_network(subpool, "IP range") if subpool else None, options, v6)


@dataclass(frozen=True, slots=True)
class PoolReply:
    pool_id: PoolId

    def encode(self) -> dict[str, Any]:
        return {"PoolID": str(self.pool_id), "Pool": str(self.pool_id.pool), "Data": {}}


@dataclass(frozen=True, slots=True)
class PoolRelease:
    pool_id: PoolId

    @classmethod
    def decode(cls, body: Body) -> "PoolRelease":
        return cls(_pool_id(body))


# --- RequestAddress / ReleaseAddress -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class AddressRequest:
    pool_id: PoolId
    address: Address | None = None  # None: any free address
    kind: str = AUX  # gateway, endpoint (a container's address) or aux (--aux-address)
    name: str = ""  # the container's endpoint name, when Docker gives it

    @classmethod
    def decode(cls, body: Body) -> "AddressRequest":
        pool_id = _pool_id(body)
        text = body.string("Address")
        options = body.strings("Options")
        name = options.get(ENDPOINT_NAME, "")
        # --aux-address reservations come with no options at all.
        kind = GATEWAY if options.get(REQUEST_TYPE) == GATEWAY_TYPE else ENDPOINT if name else AUX
        return cls(pool_id, parse_address(text, "address") if text else None, kind, name)


@dataclass(frozen=True, slots=True)
class AddressReply:
    address: Interface  # the address with its pool's prefix length

    def encode(self) -> dict[str, Any]:
        return {"Address": str(self.address), "Data": {}}


@dataclass(frozen=True, slots=True)
class AddressRelease:
    pool_id: PoolId
    address: Address

    @classmethod
    def decode(cls, body: Body) -> "AddressRelease":
        pool_id = _pool_id(body)
        return cls(pool_id, parse_address(body.string("Address", required=True), "address"))
