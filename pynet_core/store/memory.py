"""In-process store: the reference semantics, for unit tests and fakes."""
from __future__ import annotations

import threading
import time

from .api import WRITE_VERBS, Entry, Op, TransactionStore, op_applies


class MemoryStore(TransactionStore):
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

    def transaction(self, ops: list[Op]) -> bool:
        with self._changed:
            for op in ops:
                if not op_applies(self._data.get(op.key), op):
                    return False
            if not any(op.verb in WRITE_VERBS for op in ops):
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

