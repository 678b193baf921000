"""The embedded store: one sqlite file under the state directory.

Chosen over a JSON file because sqlite gives atomic multi-key transactions and
survives kill -9 at any instant (WAL + synchronous=FULL), with nothing to install.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time

from .api import WRITE_VERBS, Entry, Op, TransactionStore, op_applies

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('index', 0);
"""


class LocalStore(TransactionStore):
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        # timeout=4: a lock held by another process must not stall dockerd past its patience.
        # One connection guarded by a lock: the plugin runs threads in one process, and
        # sqlite serialises writers anyway. isolation_level=None: we issue BEGIN ourselves.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=4)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def _current_index(self) -> int:
        return self._db.execute("SELECT value FROM meta WHERE name='index'").fetchone()[0]

    def get(self, key: str) -> Entry | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: str) -> Entry | None:
        row = self._db.execute("SELECT key, value, version FROM kv WHERE key=?", (key,)).fetchone()
        return Entry(*row) if row else None

    def list(self, prefix: str) -> list[Entry]:
        # Range scan rather than LIKE: keys may contain '%' or '_'.
        upper = prefix + "\U0010ffff"
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value, version FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, upper),
            ).fetchall()
        return [Entry(*r) for r in rows]

    def transaction(self, ops: list[Op]) -> bool:
        with self._changed:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    if not op_applies(self._get(op.key), op):
                        self._db.execute("ROLLBACK")
                        return False
                writes = [op for op in ops if op.verb in WRITE_VERBS]
                if writes:
                    index = self._current_index() + 1
                    self._db.execute("UPDATE meta SET value=? WHERE name='index'", (index,))
                    for op in writes:
                        if op.verb == "delete":
                            self._db.execute("DELETE FROM kv WHERE key=?", (op.key,))
                        else:
                            self._db.execute(
                                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (op.key, op.value, index)
                            )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if writes:
                self._changed.notify_all()
            return True

    def watch(self, prefix: str, since: int, timeout: float) -> int:
        # Changes made by this process wake us at once; other processes sharing the file
        # are noticed by the periodic re-read.
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                index = self._current_index()
                left = deadline - time.monotonic()
                if index > since or left <= 0:
                    return index
                self._changed.wait(min(left, 1.0))

    def close(self) -> None:
        with self._lock:
            self._db.close()
