"""A time budget for one plugin call.

dockerd waits for a plugin answer without a timeout of its own (a hung plugin stalls
`docker run`), so every call pynet serves must end well within 5 s even when its store hangs.
Each store call is bounded by its own timeout, but a plugin call makes several in a row;
the budget set here caps them all together: a store client asks `clamp()` how long the next
request may take, and fails at once when nothing is left. Outside a budget (start-up,
background repair) only the store's own timeout applies.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Leaves ~1 s of the 5 s for the kernel work and the answer itself.
CALL_BUDGET = 4.0

_deadline: ContextVar[float | None] = ContextVar("pynet_call_deadline", default=None)


@contextmanager
def budget(seconds: float = CALL_BUDGET) -> Iterator[None]:
    """Everything inside shares `seconds` of store time (the tighter of nested budgets)."""
    end = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(end, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left in the current budget, or None outside any budget."""
    end = _deadline.get()
    return None if end is None else end - time.monotonic()


def clamp(timeout: float | None) -> float | None:
    """The timeout a request started now may use: its own, cut to what the budget has left."""
    left = remaining()
    if left is None:
        return timeout
    left = max(left, 0.001)
    return left if timeout is None else min(timeout, left)
