"""The embedded store: one sqlite file under the state directory.

Chosen over a JSON file because sqlite gives atomic multi-key transactions and
survives kill -9 at any instant (WAL + synchronous=FULL), with nothing to install.

Writes go through one connection, one transaction at a time (sqlite serialises writers
anyway). Reads do not wait for them: in WAL mode a reader sees the last committed state
without blocking or being blocked by a writer, so get() and list() use read connections of
their own (a small pool, one per concurrent reader). Under 50 concurrent `docker run`s the
plugin's threads spent most of their time queued on the one lock behind each other's reads
and commits (issue 22); a read that runs beside a commit simply comes before it, as it would
have had it taken the lock first.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from typing import Iterator

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
        # The write connection, used by one group commit at a time (transaction()): the
        # plugin runs threads in one process, and sqlite serialises writers anyway. Reads
        # have connections of their own (_reader). isolation_level=None: we issue BEGIN.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=4)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._path = path
        # Idle read connections; one is made when every other is in use (bounded by the
        # number of threads reading at once: gunicorn's threads and the background jobs).
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # Transactions waiting for the next group commit (transaction()).
        self._queue: list[_Pending] = []
        self._queue_changed = threading.Condition(threading.Lock())
        self._committing = False

    def _current_index(self) -> int:
        return self._db.execute("SELECT value FROM meta WHERE name='index'").fetchone()[0]

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._readers_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            # autocommit (isolation_level=None): each SELECT reads the latest committed state.
            conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None,
                                   timeout=4)
        try:
            yield conn
        finally:
            with self._readers_lock:
                if self._closed:
                    conn.close()
                else:
                    self._readers.append(conn)

    def get(self, key: str) -> Entry | None:
        # fetchall: the statement runs to its end, so no read transaction stays open.
        with self._reader() as conn:
            rows = conn.execute("SELECT key, value, version FROM kv WHERE key=?", (key,)).fetchall()
        return Entry(*rows[0]) if rows else None

    def _get(self, key: str) -> Entry | None:
        row = self._db.execute("SELECT key, value, version FROM kv WHERE key=?", (key,)).fetchone()
        return Entry(*row) if row else None

    def list(self, prefix: str) -> list[Entry]:
        # Range scan rather than LIKE: keys may contain '%' or '_'.
        upper = prefix + "\U0010ffff"
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT key, value, version FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, upper),
            ).fetchall()
        return [Entry(*r) for r in rows]

    def transaction(self, ops: list[Op]) -> bool:
        """Group commit: a transaction that arrives while another thread is committing waits,
        then whichever of the waiters goes next commits every transaction queued by then in
        one sqlite transaction (one fsync). Each is still all or nothing, checked against
        the state the ones before it in the batch leave, and gets versions of its own; none
        returns before the commit that holds it is durable. A batch that fails as a whole
        (an error, not a refused check) is rolled back and its transactions run one by one,
        so an error belongs to the transaction that caused it alone. Under 50 concurrent
        `docker run`s the threads queued behind one commit at a time (issue 22)."""
        mine = _Pending(ops)
        with self._queue_changed:
            self._queue.append(mine)
            while not mine.done and self._committing:
                self._queue_changed.wait()
            if mine.done:
                return mine.outcome()
            self._committing = True
            batch, self._queue = self._queue, []
        try:
            with self._changed:
                if not self._commit(batch):  # several, and one of them raised
                    for pending in batch:
                        self._commit([pending])
                if any(p.wrote for p in batch):
                    self._changed.notify_all()
        except BaseException as exc:
            # Not one transaction's doing (the database refused BEGIN, say): every caller
            # not yet answered gets the error, none a silent False.
            for pending in batch:
                if pending.applied is None and pending.error is None:
                    pending.error = exc
            raise
        finally:
            with self._queue_changed:
                self._committing = False
                for pending in batch:
                    pending.done = True
                self._queue_changed.notify_all()
        return mine.outcome()

    def _commit(self, batch: list["_Pending"]) -> bool:
        """Apply BATCH in one sqlite transaction; False (nothing written, no outcome set)
        if it raised and holds more than one transaction, else every outcome set."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            start = index = self._current_index()
            outcomes = []
            for pending in batch:
                if not all(op_applies(self._get(op.key), op) for op in pending.ops):
                    outcomes.append(False)
                    continue
                writes = [op for op in pending.ops if op.verb in WRITE_VERBS]
                if writes:
                    index += 1
                    for op in writes:
                        if op.verb == "delete":
                            self._db.execute("DELETE FROM kv WHERE key=?", (op.key,))
                        else:
                            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                                             (op.key, op.value, index))
                outcomes.append(bool(writes) or None)
            if index != start:
                self._db.execute("UPDATE meta SET value=? WHERE name='index'", (index,))
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                self._db.execute("ROLLBACK")
            if len(batch) > 1:
                return False
            batch[0].error = exc
            return True
        for pending, outcome in zip(batch, outcomes):
            pending.applied = outcome is not False
            pending.wrote = outcome is True
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
        with self._readers_lock:
            self._closed = True
            idle, self._readers = self._readers, []
        for conn in idle:
            conn.close()


class _Pending:
    """One transaction() call waiting in, or done by, a group commit."""
    __slots__ = ("ops", "done", "applied", "wrote", "error")

    def __init__(self, ops: list[Op]) -> None:
        self.ops = list(ops)
        self.done = False
        self.applied: bool | None = None  # None: not decided (yet)
        self.wrote = False
        self.error: BaseException | None = None

    def outcome(self) -> bool:
        if self.error is not None:
            raise self.error
        return bool(self.applied)
