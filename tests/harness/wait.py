"""Polled conditions instead of sleeps: wait until something is true, or fail saying what."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call `check` every `interval` s until it returns something true, and return that; after
    `timeout` s raise AssertionError naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s (last: {value!r})")
        time.sleep(interval)
