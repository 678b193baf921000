"""The embedded store under concurrent callers (pynet_core/store/local.py): reads that do not
wait for a commit, and group commit (transactions queued behind one commit go in together,
each still all or nothing, with versions of its own, an error failing only its own)."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pynet_core.store.api import Op
from pynet_core.store.local import LocalStore


@pytest.fixture
def store(tmp_path: Path):
    s = LocalStore(str(tmp_path / "pynet.db"))
    yield s
    s.close()


def _start(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # checked by the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_reads_do_not_wait_for_a_commit_in_progress(store: LocalStore) -> None:
    store.create("a/1", "one")
    with store._changed:  # what a commit holds while it writes
        t, out = _start(lambda: (store.get("a/1"), [e.key for e in store.list("a/")]))
        t.join(5)
        assert not t.is_alive(), "a read waited for the writer"
    assert out["result"][0].value == "one" and out["result"][1] == ["a/1"]


def test_a_write_is_seen_by_every_later_read(store: LocalStore) -> None:
    for i in range(50):
        assert store.create(f"k/{i}", str(i))
        assert store.get(f"k/{i}").value == str(i)
        entry = store.get(f"k/{i}")
        assert store.cas(entry.key, "x", entry.version)
        assert store.get(f"k/{i}").value == "x"
    assert len(store.list("k/")) == 50


def _queue_behind_a_commit(store: LocalStore, calls: list) -> list[tuple[threading.Thread, dict]]:
    """Start CALLS while a commit holds the database: the first becomes the next committer,
    the others queue; returns their threads once all are queued."""
    started = []
    with store._changed:
        first = _start(calls[0])
        _wait_until(lambda: store._committing)
        for call in calls[1:]:
            started.append(_start(call))
        _wait_until(lambda: len(store._queue) == len(calls) - 1)
    for t, _ in [first, *started]:
        t.join(10)
        assert not t.is_alive()
    return [first, *started]


def test_queued_transactions_commit_together_each_all_or_nothing(store: LocalStore) -> None:
    store.create("taken", "x")
    before = store.get("taken").version
    calls = [
        lambda: store.create("a", "1"),
        lambda: store.create("b", "2"),
        lambda: store.create("b", "3"),  # after "b" in the same batch: refused
        lambda: store.transaction([Op("create", "c", "4"), Op("create", "taken", "y")]),
        lambda: store.transaction([Op("check_absent", "nothing")]),
    ]
    results = _queue_behind_a_commit(store, calls)
    assert [out.get("result") for _, out in results] == [True, True, False, False, True]
    assert store.get("b").value == "2"
    assert store.get("c") is None and store.get("taken").value == "x"
    versions = [store.get(k).version for k in ("a", "b")]
    assert len(set(versions)) == 2 and min(versions) > before


def test_an_error_in_a_batch_fails_only_its_own_transaction(store: LocalStore) -> None:
    calls = [
        lambda: store.create("first", "1"),
        lambda: store.create("x", "1"),
        lambda: store.transaction([Op("frobnicate", "y")]),
        lambda: store.create("z", "1"),
    ]
    results = _queue_behind_a_commit(store, calls)
    outs = [out for _, out in results]
    assert outs[0]["result"] is True and outs[1]["result"] is True and outs[3]["result"] is True
    assert isinstance(outs[2]["error"], ValueError)
    assert store.get("x") and store.get("z") and store.get("y") is None


def test_many_threads_racing_for_keys_one_winner_each(store: LocalStore) -> None:
    wins: list[tuple[int, int]] = []
    lock = threading.Lock()

    def racer(t: int) -> None:
        for k in range(20):
            if store.create(f"race/{k}", str(t)):
                with lock:
                    wins.append((k, t))

    threads = [threading.Thread(target=racer, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sorted(k for k, _ in wins) == list(range(20))
    for k, t in wins:
        assert store.get(f"race/{k}").value == str(t)
    assert len({e.version for e in store.list("race/")}) == 20


def test_watch_wakes_for_a_group_commit(store: LocalStore) -> None:
    since = store.watch("", 0, 0)
    t, out = _start(lambda: store.watch("", since, 5))
    time.sleep(0.05)
    started = time.monotonic()
    store.create("w", "1")
    t.join(5)
    assert out["result"] > since and time.monotonic() - started < 2


def test_closed_store_refuses_reads(tmp_path: Path) -> None:
    s = LocalStore(str(tmp_path / "pynet.db"))
    s.create("a", "1")
    s.close()
    with pytest.raises(Exception):
        s.get("a")


class _RefusingBegin:
    """The store's connection, except that BEGIN fails (another process holding the
    database past the timeout, a disk gone read-only)."""

    def __init__(self, db) -> None:
        self._db = db

    def execute(self, sql, *args):
        if sql.startswith("BEGIN"):
            raise sqlite3.OperationalError("database is locked")
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_refused_begin_is_every_queued_caller_s_error_never_a_false(store: LocalStore) -> None:
    real = store._db
    calls = [lambda: store.create("a", "1"), lambda: store.create("b", "1"),
             lambda: store.create("c", "1")]
    with store._changed:
        store._db = _RefusingBegin(real)
        first = _start(calls[0])
        _wait_until(lambda: store._committing)
        rest = [_start(c) for c in calls[1:]]
        _wait_until(lambda: len(store._queue) == 2)
    for t, _ in [first, *rest]:
        t.join(10)
    store._db = real
    for _, out in [first, *rest]:
        assert "result" not in out and isinstance(out["error"], sqlite3.OperationalError)
    assert store.create("a", "2") and store.get("a").value == "2"  # the store still works
