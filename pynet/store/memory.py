"""In-process store: the reference semantics, for unit tests and fakes."""
from __future__ import annotations

import threading
import time

from .api import Entry, Op


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[str, Entry] = {}
        self._index = 0
        self._changed = threading.Condition()

    def _bump(self) -> int:
        self._index += 1
        self._changed.notify_all()
        return self._index

    def get(self, key: str) -> Entry | None:
        with self._changed:
            return self._data.get(key)

    def list(self, prefix: str) -> list[Entry]:
        with self._changed:
            return [e for k, e in sorted(self._data.items()) if k.startswith(prefix)]

    def create(self, key: str, value: str) -> bool:
        return self.transaction([Op("create", key, value)])

    def cas(self, key: str, value: str, version: int) -> bool:
        return self.transaction([Op("cas", key, value, version)])

    def delete(self, key: str, version: int | None = None) -> bool:
        return self.transaction([Op("delete", key, version=version)])

    def transaction(self, ops: list[Op]) -> bool:
        with self._changed:
            for op in ops:
                if not _check(self._data.get(op.key), op):
                    return False
            if not any(op.verb in ("create", "cas", "delete") for op in ops):
                return True
            index = self._bump()
            for op in ops:
                if op.verb in ("create", "cas"):
                    self._data[op.key] = Entry(op.key, op.value, index)
                elif op.verb == "delete":
                    self._data.pop(op.key, None)
            return True

    def watch(self, prefix: str, since: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._index <= since:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._index

    def close(self) -> None:
        pass


def _check(current: Entry | None, op: Op) -> bool:
    """Whether `op` may apply to the key's current entry (shared by every backend)."""
    if op.verb in ("create", "check_absent"):
        return current is None
    if op.verb in ("cas", "check_version"):
        return current is not None and current.version == op.version
    if op.verb == "delete":
        return current is not None and (op.version is None or current.version == op.version)
    raise ValueError(f"unknown store operation {op.verb!r}")
