"""Defaults and value checks shared by the flags (settings.py) and the drivers' own options.

One definition each: `--ipam-block-size` and `--ipam-opt pynet.block-size` accept the same
sizes, `PYNET_CONSUL_VERIFY=yes` and `-o icc=yes` the same booleans. Pure: no I/O.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

Network = IPv4Network | IPv6Network

# Addresses per per-host IPAM block; /26 in IPv4, /122 in IPv6, as Calico's defaults.
DEFAULT_BLOCK_SIZE = 64
# Below this a block is not worth its key.
MIN_BLOCK_SIZE = 4

# The leak check (ipam_driver/leaks.py).
DEFAULT_LEAK_CHECK_INTERVAL = 60.0
DEFAULT_LEAK_GRACE = 300.0
# Docker's plugin client retries a call for up to 30 s (pkg/plugins/client.go): a shorter
# grace could free an address whose CreateEndpoint is still on its way.
MIN_LEAK_GRACE = 60.0

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(text: object) -> bool | None:
    """'yes'/'no' and friends as a bool; None when the text is neither."""
    word = str(text).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def is_block_size(size: int) -> bool:
    """0 (no blocks) or a power of two of at least MIN_BLOCK_SIZE."""
    return size == 0 or (size >= MIN_BLOCK_SIZE and size & (size - 1) == 0)


@dataclass(frozen=True, slots=True)
class DefaultPool:
    """One `--default-address-pool base=CIDR,size=N`: automatic subnets are cut from base."""
    base: Network
    size: int

    @classmethod
    def parse(cls, text: str) -> "DefaultPool":
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        if set(fields) != {"base", "size"}:
            raise ValueError(f"default address pool {text!r} must be 'base=CIDR,size=N'")
        base = ipaddress.ip_network(fields["base"], strict=True)
        size = int(fields["size"])
        if not base.prefixlen <= size <= base.max_prefixlen:
            raise ValueError(f"default address pool {text!r}: size /{size} must be between "
                             f"/{base.prefixlen} and /{base.max_prefixlen}")
        return cls(base, size)


DEFAULT_POOLS = (
    DefaultPool.parse("base=10.192.0.0/10,size=24"),
    DefaultPool.parse("base=fd70:796e:6574::/48,size=64"),
)
