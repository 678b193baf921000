"""JSON records on top of the store contract, with an optimistic read-modify-write loop."""
from __future__ import annotations

import json
from typing import Any, Callable, Generic, TypeVar

from pynet_core.errors import BadRecord, StoreContention
from pynet_core.record_fields import MAX_RECORD_DEPTH, nested_deeper_than

from .api import Entry, Store

T = TypeVar("T")

# How many lost compare-and-set races one operation tolerates before giving up. Each
# loss means another writer made progress, so this only bites under extreme contention.
MAX_ATTEMPTS = 64


def load(entry: Entry | None) -> Any:
    return json.loads(entry.value) if entry else None


def checked_load(entry: Entry) -> Any:
    """The JSON of entry, or BadRecord naming its key: text that is not UTF-8 (a backend
    keeps such bytes escaped) or not JSON."""
    try:
        entry.value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRecord(entry.key, "its value is not UTF-8 text") from None
    try:
        data = json.loads(entry.value)
    except ValueError as exc:
        raise BadRecord(entry.key, f"its value is not JSON ({exc})") from None
    except RecursionError:  # "[[[[..." nested deeper than the parser goes
        data = None
        deep = True
    else:
        deep = nested_deeper_than(data)
    if deep:
        raise BadRecord(entry.key, f"its value is JSON nested too deeply (more than "
                                   f"{MAX_RECORD_DEPTH} levels)")
    return data


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def read(store: Store, key: str) -> Any:
    return load(store.get(key))


def update(store: Store, key: str, mutate: Callable[[Any], Any], what: str) -> Any:
    """Apply mutate(current) -> new to the record at key until the write wins a CAS.

    mutate gets None when the key is absent and returns None to delete the key. It may
    raise to abort; it must be free of side effects since it can run several times.
    Returns what mutate returned on the winning attempt.
    """
    for _ in range(MAX_ATTEMPTS):
        entry = store.get(key)
        new = mutate(load(entry))
        if new is None:
            if entry is None or store.delete(key, entry.version):
                return None
        elif entry is None:
            if store.create(key, dump(new)):
                return new
        elif store.cas(key, dump(new), entry.version):
            return new
    raise StoreContention(f"gave up {what}: {MAX_ATTEMPTS} concurrent writers changed {key} first")


class ParsedOnce(Generic[T]):
    """`parse(entry)`, remembered by key while the key's text stays the same: a listing read
    again and again (the overlay watcher reads every peer record at every change, issue 22)
    decodes and checks only the records whose text changed. What `parse` answers depends on
    the key and the text alone, so an unchanged text is the same record (parsed values are
    immutable), and any other text is parsed and checked anew; a refusal (a ValueError:
    BadRecord, the models' InvalidRecord) is remembered and raised again the same way, and
    anything else (a bug) is never remembered. `keep(keys)` after a whole listing drops
    the keys that are gone, so the memo never outgrows the store. Safe across threads: a
    race only costs a parse."""

    def __init__(self, parse: Callable[[Entry], T]) -> None:
        self._parse = parse
        self._known: dict[str, tuple[str, T | None, ValueError | None]] = {}

    def __call__(self, entry: Entry) -> T:
        hit = self._known.get(entry.key)
        if hit is None or hit[0] != entry.value:
            try:
                hit = (entry.value, self._parse(entry), None)
            except ValueError as exc:
                hit = (entry.value, None, exc)
            self._known[entry.key] = hit
        if hit[2] is not None:
            raise hit[2].with_traceback(None)
        return hit[1]  # type: ignore[return-value]

    def keep(self, keys: set[str]) -> None:
        known = self._known
        self._known = {k: v for k, v in known.items() if k in keys}
