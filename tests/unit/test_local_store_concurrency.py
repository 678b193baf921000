"""The embedded store under concurrent callers (pynet_core/store/local.py): reads that do not
wait for a commit, and group commit (transactions queued behind one commit go in together,
each still all or nothing, with versions of its own, an error failing only its own)."""
from __future__ import annotations

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
