"""What a value that becomes one level of a store key may be (an address space, a host id).

'/' separates key levels and '..' reads as "the level above" to every tool that treats a
key as a path, so a client value with either would write outside the prefix meant for it
(an AddressSpace `x/../y` put an overlay's records where no DeleteNetwork found them).
Such a value is refused before anything is written. Pure.
"""
from __future__ import annotations

import re

MAX_LENGTH = 64
# Letters, digits, '-', '_', '.'; not starting with '.' (so never '.' or '..').
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", re.ASCII)


def segment_problem(value: object, max_length: int = MAX_LENGTH) -> str | None:
    """Why value cannot be one key level, or None when it can."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "it is empty"
    if len(value) > max_length:
        return f"it is {len(value)} characters long, at most {max_length} are allowed"
    if "/" in value:
        return "'/' separates store key levels"
    if ".." in value:
        return "'..' would name another key level"
    if not _SEGMENT.fullmatch(value):
        return ("only letters, digits, '-', '_' and '.' are allowed, and it may not start "
                "with '.'")
    return None
