"""A time budget for one plugin call.

dockerd waits for a plugin answer without a timeout of its own (a hung plugin stalls
`docker run`), so every call pynet serves must end well within 5 s even when its store hangs.
Each store call is bounded by its own timeout, but a plugin call makes several in a row;
the budget set here caps them all together: a store client asks `clamp()` how long the next
request may take, and fails at once when nothing is left. Outside a budget (start-up,
background repair) only the store's own timeout applies.

Time a call spends on other things (waiting for the kernel, for a peer sync) is named with
`spending()`, so that a store call refused for lack of time blames what used it up, not a
store that was never slow.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Leaves ~1 s of the 5 s for the kernel work and the answer itself.
CALL_BUDGET = 4.0

_deadline: ContextVar[float | None] = ContextVar("pynet_call_deadline", default=None)
# What the current call's budget was spent on besides the store: what -> seconds, and the
# budget's length under "".
_spent: ContextVar[dict[str, float] | None] = ContextVar("pynet_call_spent", default=None)


@contextmanager
def budget(seconds: float = CALL_BUDGET) -> Iterator[None]:
    """Everything inside shares `seconds` of store time (the tighter of nested budgets)."""
    end = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(end, outer))
    spent = _spent.set({"": seconds}) if outer is None else None  # nested: the outer's record
    try:
        yield
    finally:
        _deadline.reset(token)
        if spent is not None:
            _spent.reset(spent)


@contextmanager
def spending(what: str) -> Iterator[None]:
    """Time spent inside on `what` (not the store) counts against the budget under that name."""
    record = _spent.get()
    start = time.monotonic()
    try:
        yield
    finally:
        if record is not None:
            record[what] = record.get(what, 0.0) + time.monotonic() - start


def spent_elsewhere(share: float = 0.0) -> tuple[str, float] | None:
    """(what, seconds) of the largest named use of the current budget other than the store,
    if it took at least `share` of the budget; else None (also outside a budget)."""
    record = _spent.get()
    named = {k: v for k, v in (record or {}).items() if k}
    if not named:
        return None
    what = max(named, key=lambda k: named[k])
    return (what, named[what]) if named[what] >= share * record[""] else None


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
