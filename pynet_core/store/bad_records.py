"""Records read from the store that are not what pynet writes: skipped where a list is read,
logged once per key and version (a bad record read at every sync must not flood the log),
and counted by kind for the metric pynet_store_records_skipped_total.

Parsing is each model's job (it raises pynet_core.errors.BadRecord); this module only decides
what a listing does with a record that failed.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from pynet_core.errors import BadRecord

from .api import Entry

log = logging.getLogger(__name__)

T = TypeVar("T")

# Keys and versions already logged; bounded, so a store full of bad records costs little.
_LOGGED_MAX = 10_000
# (The value's hash too: a store made anew, an embedded one after a reset, counts versions
# from the start again.)
_logged: set[tuple[str, int, int]] = set()
_lock = threading.Lock()
# Called with the kind of every record skipped (pynet/metrics.py counts them).
listeners: list[Callable[[str], None]] = []


def skipped(entry: Entry, reason: str, kind: str) -> None:
    """Note a bad record at entry: logged the first time this key and version is seen,
    counted every time."""
    with _lock:
        seen = (entry.key, entry.version, hash(entry.value))
        first = seen not in _logged
        if first:
            if len(_logged) >= _LOGGED_MAX:
                _logged.clear()
            _logged.add(seen)
    if first:
        log.error("skipping the %s record at %s (version %d): %s", kind, entry.key,
                  entry.version, reason)
    for listener in list(listeners):
        listener(kind)


def readable(entries: Iterable[Entry], parse: Callable[[Entry], T], kind: str) -> Iterator[T]:
    """parse(entry) for every entry, leaving out (and noting) those that are bad records."""
    for entry in entries:
        try:
            yield parse(entry)
        except BadRecord as exc:
            skipped(entry, exc.reason, kind)
