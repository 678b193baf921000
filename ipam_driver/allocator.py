"""Pure choice of subnets and addresses. No I/O: callers pass in what is taken."""
from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from pynet_core.defaults import Network

Address = IPv4Address | IPv6Address
Interface = IPv4Interface | IPv6Interface  # an address with its pool's prefix length


def next_free_subnet(base: Network, size: int, taken: list[Network]) -> Network | None:
    """The first /size subnet of base that overlaps nothing in taken.

    Walks by jumping over each taken network rather than testing every candidate, so a
    /8 split into /30s costs as much as the number of taken networks, not 4 million steps.
    """
    if size < base.prefixlen or size > base.max_prefixlen:
        raise ValueError(f"subnet size /{size} does not fit in {base}")
    step = 1 << (base.max_prefixlen - size)
    blockers = sorted(
        (int(n.network_address), int(n.broadcast_address))
        for n in taken
        if n.version == base.version and n.overlaps(base)
    )
    candidate = int(base.network_address)
    last = int(base.broadcast_address)
    i = 0
    while candidate + step - 1 <= last:
        end = candidate + step - 1
        # Skip blockers that end before this candidate.
        while i < len(blockers) and blockers[i][1] < candidate:
            i += 1
        clash = next((b for b in blockers[i:] if b[0] <= end), None)
        if clash is None:
            return ipaddress.ip_network((candidate, size))
        # Jump to the first aligned candidate after the clashing network.
        candidate = ((max(clash[1], end) // step) + 1) * step
    return None


def reserved_addresses(pool: Network) -> set[int]:
    """Addresses never handed out: the subnet address, and the IPv4 broadcast.

    /31 and /32 (IPv4) and /127, /128 (IPv6) are point-to-point: every address is usable.
    """
    if pool.num_addresses <= 2:
        return set()
    reserved = {int(pool.network_address)}
    if pool.version == 4:
        reserved.add(int(pool.broadcast_address))
    return reserved


def first_free_address(within: Network, pool: Network, used: set[int]) -> int | None:
    """Lowest address of `within` (the pool or its sub-range) that is neither used nor reserved.

    Steps up from the bottom of `within` while the address is taken: at most as many steps
    as there are taken addresses in it, with no copy or sort of `used` (called once per
    block for every allocation, so a copy and sort of every claim made each one cost
    O(N log N) per block at N endpoints)."""
    reserved = reserved_addresses(pool)
    candidate, last = int(within.network_address), int(within.broadcast_address)
    while candidate <= last and (candidate in used or candidate in reserved):
        candidate += 1
    return candidate if candidate <= last else None
