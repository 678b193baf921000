"""Store records that failed validation: logged once per (key, version), counted, skipped.

Every host writes the shared store, so a record may be anything: the reader validates it at
the edge of its model, skips it, and reports it here. A record read again and again (every
overlay sync) is logged once per version, so a bad record neither floods the log nor goes
unnoticed when it changes. The composition root wires `counter` to the Prometheus metric
pynet_store_records_rejected_total{kind}.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("pynet.store")

# How many (key, version) pairs are remembered: a bound on memory, not on correctness (one
# forgotten is logged once more).
REMEMBERED = 10_000

counter: Callable[[str], None] | None = None

_seen: OrderedDict[tuple[str, str], None] = OrderedDict()
_lock = threading.Lock()


def report(key: str, version: int | str, kind: str, reason: str) -> bool:
    """Record `key` at `version` (a `kind` of record) as rejected for `reason`; True when it
    was new (logged and counted now)."""
    mark = (key, str(version))
    with _lock:
        if mark in _seen:
            _seen.move_to_end(mark)
            return False
        _seen[mark] = None
        while len(_seen) > REMEMBERED:
            _seen.popitem(last=False)
    log.error("ignoring %s record %s (version %s): %s", kind, printable(key), version, reason)
    if counter is not None:
        counter(kind)
    return True


def printable(key: str) -> str:
    # A key is whatever some host wrote: never let it break a log line.
    return key.encode("unicode_escape", "backslashreplace").decode("ascii")[:300]


def forget() -> None:
    """Tests: every record new again."""
    with _lock:
        _seen.clear()
