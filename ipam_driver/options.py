"""Parsing of IPAM request fields: addresses, pools and the options Docker passes."""
from __future__ import annotations

import ipaddress

from pynet.defaults import is_block_size
from pynet.errors import BadRequest

from .allocator import Network

GATEWAY_TYPE = "com.docker.network.gateway"
REQUEST_TYPE = "RequestAddressType"
ENDPOINT_NAME = "com.docker.network.endpoint.name"
# --ipam-opt keys pynet understands on RequestPool; refusing unknown keys beats silently
# ignoring a typo. pynet.block-size: addresses per host block in this pool (0: no blocks).
BLOCK_SIZE_OPTION = "pynet.block-size"
KNOWN_POOL_OPTIONS: set[str] = {BLOCK_SIZE_OPTION}


def parse_network(text: str, what: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise BadRequest(f"{what} {text!r} is not a valid CIDR subnet ({exc})") from None
        raise BadRequest(f"{what} {text!r} has host bits set; did you mean {loose}?") from None


def parse_address(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # Docker sends bare addresses, but accept a prefix length too: it carries no meaning here.
    try:
        return ipaddress.ip_interface(text).ip
    except ValueError:
        raise BadRequest(f"{what} {text!r} is not a valid IP address") from None


def check_pool_options(options: dict[str, str]) -> None:
    unknown = sorted(set(options) - KNOWN_POOL_OPTIONS)
    if unknown:
        raise BadRequest(
            f"unknown --ipam-opt option {unknown[0]!r}: pynet's IPAM accepts only "
            f"{', '.join(sorted(KNOWN_POOL_OPTIONS))}"
        )


def pool_block_size(options: dict[str, str], default: int) -> int:
    """--ipam-opt pynet.block-size=N: 0, or a power of two of at least 4."""
    text = options.get(BLOCK_SIZE_OPTION)
    if text is None:
        return default
    try:
        size = int(text)
    except ValueError:
        size = -1
    if not is_block_size(size):
        raise BadRequest(f"IPAM option {BLOCK_SIZE_OPTION}={text!r}: expected 0 (no host blocks) "
                         "or a power of two of at least 4")
    return size


def address_kind(options: dict[str, str]) -> str:
    """gateway, endpoint (a container's address) or aux (--aux-address: sent with no options)."""
    if options.get(REQUEST_TYPE) == GATEWAY_TYPE:
        return "gateway"
    if options.get(ENDPOINT_NAME):
        return "endpoint"
    return "aux"
