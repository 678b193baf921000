"""Per-host address blocks: pure choice of the next address, given what the store holds.

A pool's allocation range is cut into aligned blocks. A host claims a block (one
create-if-absent key naming it) and takes addresses from its own blocks first, so hosts
stop racing each other for the same lowest free address. Blocks are only hints: every
address is still claimed by its own create-if-absent key, which alone makes it unique. A
host whose blocks are full claims another; when every block is claimed it borrows any free
address of the range (as a swarm manager or a `--ip` request may too).
"""
from __future__ import annotations

from dataclasses import dataclass

from pynet_core.defaults import MIN_BLOCK_SIZE

from .allocator import Network, first_free_address, next_free_subnet

MIN_BLOCKS = 4  # a range is cut into at least this many blocks, so three hosts each get one


@dataclass(frozen=True, slots=True)
class Choice:
    """What to do next: claim `address` ("own": in one of our blocks; "claim": after
    claiming `block` for this host; "borrow": outside our blocks, every block being taken)."""
    kind: str
    address: int
    block: Network | None = None


def block_prefix(within: Network, size: int) -> int | None:
    """Prefix length of the blocks `within` is cut into for blocks of `size` addresses
    (a power of two), or None when it gets no blocks (size 0, or the range is too small)."""
    if size <= 0:
        return None
    prefix = within.max_prefixlen - (size.bit_length() - 1)
    prefix = max(prefix, within.prefixlen + (MIN_BLOCKS.bit_length() - 1))
    if within.max_prefixlen - prefix < MIN_BLOCK_SIZE.bit_length() - 1:
        return None
    return prefix


def choose(within: Network, pool: Network, prefix: int, mine: list[Network],
           taken: list[Network], used: set[int]) -> Choice | None:
    """The next address for this host: the lowest free one in its own blocks, else the
    lowest free one of the first unclaimed block (to be claimed), else the lowest free one
    anywhere in `within` (borrowed). None: `within` is full.

    mine: this host's blocks; taken: every claimed block (this host's included);
    used: addresses claimed or being claimed.
    """
    for block in sorted(mine, key=lambda b: int(b.network_address)):
        free = first_free_address(block, pool, used)
        if free is not None:
            return Choice("own", free, block)
    skip = list(taken)
    # Each unclaimed block tried and found full joins `skip`; a block only fills up through
    # borrowing or `--ip`, so this loop is short in practice and bounded by the block count.
    while (block := next_free_subnet(within, prefix, skip)) is not None:
        free = first_free_address(block, pool, used)
        if free is not None:
            return Choice("claim", free, block)
        skip.append(block)
    free = first_free_address(within, pool, used)
    return None if free is None else Choice("borrow", free)


def idle_blocks(mine: list[Network], used: set[int], keep: int = 1) -> list[Network]:
    """Blocks this host may give back: those holding no claimed address, as long as it
    keeps `keep` blocks in all (a warm block spares a claim on the next container)."""
    empties = sorted((b for b in mine if block_is_empty(b, used)),
                     key=lambda b: int(b.network_address))
    keep_empty = max(0, keep - (len(mine) - len(empties)))
    return empties[keep_empty:]


def block_is_empty(block: Network, used: set[int]) -> bool:
    """No address of `used` lies in `block`; the cost is the smaller of the two sizes, so a
    release in a pool of thousands of claims looks at one block, not every claim."""
    lo, hi = int(block.network_address), int(block.broadcast_address)
    if hi - lo + 1 <= len(used):
        return not any(a in used for a in range(lo, hi + 1))
    return not any(lo <= a <= hi for a in used)
