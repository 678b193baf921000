"""Pure choice of subnets and addresses. No I/O: callers pass in what is taken."""
from __future__ import annotations

import bisect
import ipaddress
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from pynet.defaults import Network

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
    """Lowest address of `within` (the pool or its sub-range) that is neither used nor reserved."""
    skip = used | reserved_addresses(pool)
    ordered = sorted(a for a in skip if int(within.network_address) <= a <= int(within.broadcast_address))
    candidate = int(within.network_address)
    # Walk the sorted taken addresses: the first gap is the answer.
    idx = bisect.bisect_left(ordered, candidate)
    while idx < len(ordered) and ordered[idx] == candidate:
        candidate += 1
        idx += 1
    if candidate > int(within.broadcast_address):
        return None
    return candidate
