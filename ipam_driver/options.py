"""pynet's own --ipam-opt options on RequestPool (Docker's fields: protocol.py)."""
from __future__ import annotations

from pynet_core.defaults import is_block_size
from pynet_core.errors import BadRequest

# --ipam-opt keys pynet understands on RequestPool; refusing unknown keys beats silently
# ignoring a typo. pynet.block-size: addresses per host block in this pool (0: no blocks).
BLOCK_SIZE_OPTION = "pynet.block-size"
KNOWN_POOL_OPTIONS: set[str] = {BLOCK_SIZE_OPTION}


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

