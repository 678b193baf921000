"""The Store contract (driver/store/api.py), run against every backend in conftest.py:
MemoryStore, LocalStore on a temp file, ConsulStore on a real agent. Then what only the
Consul store has to prove: keys under its prefix, Consul's txn limit, and failing fast
(BackendUnavailable, naming the address) when Consul is unreachable, silent or leaderless.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import consul
import pytest

from pynet_core.errors import BackendUnavailable
from pynet_core.store.api import Op, Store
from pynet_core.store.consul import MAX_TXN_OPS, ConsulStore
from tests.harness.consul import ConsulAgent

OpenStore = Callable[[], Store]


def _later(delay: float, fn: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=run)
    t.start()
    return t


def _run_threads(n: int, fn: Callable[[int], object]) -> list[object]:
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except BaseException as e:  # surfaced below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


# -- get, create, list -----------------------------------------------------------------


def test_get_absent_is_none(store: Store) -> None:
    assert store.get("nothing/here") is None


@pytest.mark.parametrize("value", ["v", "", "ünïcødé €\n\t{\"json\": [1, 2]}", "x" * 100_000])
def test_create_then_get_round_trips_value(store: Store, value: str) -> None:
    assert store.create("k", value)
    e = store.get("k")
    assert e is not None and (e.key, e.value) == ("k", value) and e.version > 0


@pytest.mark.parametrize("key", ["a/with space", "a/ünï", "a/%41", "a/_x", "a/q?x=1#f", "a/b:c@d"])
def test_keys_with_odd_characters(store: Store, key: str) -> None:
    assert store.create(key, "v")
    assert store.get(key) == store.list("a/")[0]
    assert [e.key for e in store.list("a/")] == [key]


def test_create_only_if_absent(store: Store) -> None:
    assert store.create("k", "first")
    before = store.get("k")
    assert not store.create("k", "second")
    assert store.get("k") == before


def test_list_is_sorted_relative_and_prefix_isolated(store: Store) -> None:
    keys = ["a/2", "a/10", "a/1", "ab/1", "a", "b/1", "a/sub/x"]
    for k in keys:
        assert store.create(k, f"value of {k}")
    listed = store.list("a/")
    assert [e.key for e in listed] == ["a/1", "a/10", "a/2", "a/sub/x"]  # not "ab/1", not "a"
    assert listed == [store.get(e.key) for e in listed]
    assert [e.key for e in store.list("ab")] == ["ab/1"]
    assert [e.key for e in store.list("")] == sorted(keys)
    assert store.list("zz/") == []


# -- cas, delete, versions -------------------------------------------------------------


def test_cas_succeeds_only_at_current_version(store: Store) -> None:
    store.create("k", "v1")
    v1 = store.get("k").version  # type: ignore[union-attr]
    assert store.cas("k", "v2", v1)
    e2 = store.get("k")
    assert e2 is not None and e2.value == "v2" and e2.version > v1
    assert not store.cas("k", "v3", v1)  # stale: somebody wrote since
    assert store.get("k") == e2


@pytest.mark.parametrize("version", [0, 1, 10**9])
def test_cas_on_absent_key_fails_and_creates_nothing(store: Store, version: int) -> None:
    # Consul's ?cas=0 means "create if absent": a cas at version 0 must not become that.
    assert not store.cas("k", "v", version)
    assert store.get("k") is None


def test_delete_without_version(store: Store) -> None:
    store.create("k", "v")
    assert store.delete("k")
    assert store.get("k") is None
    assert not store.delete("k")  # absent


def test_delete_with_version(store: Store) -> None:
    store.create("k", "v1")
    v1 = store.get("k").version  # type: ignore[union-attr]
    store.cas("k", "v2", v1)
    current = store.get("k")
    assert current is not None
    assert not store.delete("k", v1)  # stale
    assert store.get("k") == current
    assert store.delete("k", current.version)
    assert store.get("k") is None
    assert not store.delete("k", current.version)  # absent now


def test_versions_strictly_increase(store: Store) -> None:
    seen = []
    store.create("a", "1")
    seen.append(store.get("a").version)  # type: ignore[union-attr]
    store.create("b", "1")
    seen.append(store.get("b").version)  # type: ignore[union-attr]
    store.cas("a", "2", seen[0])
    seen.append(store.get("a").version)  # type: ignore[union-attr]
    store.delete("b")
    store.create("b", "2")  # re-created: still newer than anything before
    seen.append(store.get("b").version)  # type: ignore[union-attr]
    store.transaction([Op("cas", "a", "3", seen[2]), Op("create", "c", "1")])
    seen.append(store.get("c").version)  # type: ignore[union-attr]
    assert seen == sorted(set(seen)), seen


# -- transactions ----------------------------------------------------------------------


def test_transaction_applies_every_op(store: Store) -> None:
    for k in ("a", "b", "c", "d"):
        store.create(k, "old")
    va, vb, vd = (store.get(k).version for k in ("a", "b", "d"))  # type: ignore[union-attr]
    assert store.transaction([
        Op("create", "new", "n"),
        Op("cas", "a", "A", va),
        Op("delete", "b", version=vb),
        Op("delete", "c"),
        Op("check_absent", "absent"),
        Op("check_version", "d", version=vd),
    ])
    assert store.get("new").value == "n"  # type: ignore[union-attr]
    assert store.get("a").value == "A"  # type: ignore[union-attr]
    assert store.get("b") is None and store.get("c") is None and store.get("absent") is None
    assert store.get("d").version == vd  # type: ignore[union-attr]
    assert min(store.get(k).version for k in ("new", "a")) > vd  # type: ignore[union-attr]


_FAILING = {
    "stale cas": lambda stale: Op("cas", "c", "X", stale),
    "create existing": lambda stale: Op("create", "c", "X"),
    "delete stale": lambda stale: Op("delete", "c", version=stale),
    "delete absent": lambda stale: Op("delete", "absent"),
    "check_absent on existing": lambda stale: Op("check_absent", "c"),
    "check_version stale": lambda stale: Op("check_version", "c", version=stale),
    "check_version absent": lambda stale: Op("check_version", "absent", version=stale),
}


@pytest.mark.parametrize("failing", list(_FAILING), ids=list(_FAILING))
def test_transaction_is_all_or_nothing(store: Store, failing: str) -> None:
    for k in ("a", "b", "c"):
        store.create(k, "old")
    stale = store.get("c").version  # type: ignore[union-attr]
    store.cas("c", "moved", stale)
    before = store.list("")
    va, vb = store.get("a").version, store.get("b").version  # type: ignore[union-attr]
    ops = [Op("create", "new", "n"), Op("cas", "a", "A", va), Op("delete", "b", version=vb)]
    assert not store.transaction(ops + [_FAILING[failing](stale)])
    assert store.list("") == before  # nothing written, nothing deleted


def test_checks_only_and_empty_transactions(store: Store) -> None:
    store.create("k", "v")
    before = store.list("")
    v = before[0].version
    assert store.transaction([Op("check_absent", "x"), Op("check_version", "k", version=v)])
    assert store.transaction([])
    assert store.list("") == before


def test_transaction_checks_see_the_state_before_it(store: Store) -> None:
    # The reference checks every op against the state before the transaction, so a
    # check placed after a write to the same key still sees the old version.
    store.create("k", "v")
    v = store.get("k").version  # type: ignore[union-attr]
    assert store.transaction([Op("cas", "k", "new", v), Op("check_version", "k", version=v)])
    assert store.get("k").value == "new"  # type: ignore[union-attr]


def test_unknown_verb_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="frobnicate"):
        store.transaction([Op("frobnicate", "k")])
    assert store.get("k") is None


# -- watch -----------------------------------------------------------------------------


def test_watch_returns_promptly_after_a_change(store: Store) -> None:
    since = store.watch("w/", 0, 0)  # timeout 0: just the current index
    writer = _later(0.3, lambda: store.create("w/k", "v"))
    t0 = time.monotonic()
    index = store.watch("w/", since, 10.0)
    elapsed = time.monotonic() - t0
    writer.join()
    assert 0.2 < elapsed < 3.0
    assert index > since and index >= store.get("w/k").version  # type: ignore[union-attr]


def test_watch_waits_out_its_timeout_when_nothing_changes(store: Store) -> None:
    store.create("w/k", "v")
    since = store.watch("w/", 0, 0)
    t0 = time.monotonic()
    assert store.watch("w/", since, 1.0) == since
    assert 0.9 <= time.monotonic() - t0 < 2.5  # Consul: + up to 1/16 jitter


def test_watch_returns_at_once_when_since_is_behind(store: Store) -> None:
    since = store.watch("w/", 0, 0)
    store.create("w/k", "v")
    t0 = time.monotonic()
    assert store.watch("w/", since, 10.0) > since
    assert time.monotonic() - t0 < 0.5


# -- several handles, concurrency ------------------------------------------------------


def test_handles_see_each_others_writes(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    assert a.create("k", "from a")
    assert b.get("k").value == "from a"  # type: ignore[union-attr]
    assert not b.create("k", "from b")
    assert b.cas("k", "from b", b.get("k").version)  # type: ignore[union-attr]
    assert a.get("k").value == "from b"  # type: ignore[union-attr]
    since = b.watch("w/", 0, 0)
    writer = _later(0.2, lambda: a.create("w/k", "v"))
    t0 = time.monotonic()
    assert b.watch("w/", since, 10.0) > since  # LocalStore: noticed by its 1 s re-read
    writer.join()
    assert time.monotonic() - t0 < 3.0


def test_data_survives_reopening(open_store: OpenStore) -> None:
    first = open_store()
    first.create("k", "v")
    written = first.get("k")
    first.close()
    assert open_store().get("k") == written


def test_racing_creates_have_exactly_one_winner(open_store: OpenStore) -> None:
    handles = [open_store(), open_store()]
    n = 16
    barrier = threading.Barrier(n)

    def create(i: int) -> bool:
        barrier.wait()
        return handles[i % 2].create("claim", f"thread {i}")

    won = _run_threads(n, create)
    assert won.count(True) == 1
    assert handles[0].get("claim").value == f"thread {won.index(True)}"  # type: ignore[union-attr]


def test_concurrent_cas_increments_lose_nothing(open_store: OpenStore) -> None:
    handles = [open_store(), open_store()]
    handles[0].create("counter", "0")
    threads, per_thread = 8, 25

    def increment(i: int) -> None:
        s = handles[i % 2]
        for _ in range(per_thread):
            while True:  # the read-modify-CAS loop every allocator runs
                e = s.get("counter")
                assert e is not None
                if s.cas("counter", str(int(e.value) + 1), e.version):
                    break

    _run_threads(threads, increment)
    assert handles[1].get("counter").value == str(threads * per_thread)  # type: ignore[union-attr]


# -- Consul only -----------------------------------------------------------------------


@pytest.mark.consul
def test_consul_keeps_keys_under_its_prefix(consul_agent: ConsulAgent, consul_prefix: str) -> None:
    store = ConsulStore(consul_agent.addr, prefix=consul_prefix)
    other = ConsulStore(consul_agent.addr, prefix=consul_prefix + "other/")
    try:
        store.create("k", "v")
        host, port = consul_agent.addr.split(":")
        _, raw = consul.Consul(host=host, port=int(port)).kv.get(consul_prefix + "k")
        assert raw["Value"] == b"v" and raw["ModifyIndex"] == store.get("k").version  # type: ignore[union-attr]
        assert other.get("k") is None and other.list("") == []
        other.create("k", "w")
        assert [e.key for e in store.list("")] == ["k", "other/k"]
    finally:
        store.close()
        other.close()


@pytest.mark.consul
def test_consul_txn_limit_matches_the_agent(consul_agent: ConsulAgent, consul_prefix: str) -> None:
    store = ConsulStore(consul_agent.addr, prefix=consul_prefix)
    assert store.transaction([Op("check_absent", f"k{i}") for i in range(MAX_TXN_OPS)])
    with pytest.raises(ValueError, match=f"at most {MAX_TXN_OPS}"):
        store.transaction([Op("check_absent", f"k{i}") for i in range(MAX_TXN_OPS + 1)])
    with pytest.raises(ValueError, match="split it"):  # a write costs a check and a set
        store.transaction([Op("create", f"k{i}", "v") for i in range(MAX_TXN_OPS // 2 + 1)])
    assert store.list("") == []
    # The agent itself refuses one operation more: the constant is not just our guess.
    body = json.dumps([{"KV": {"Verb": "check-not-exists", "Key": f"x{i}"}} for i in range(MAX_TXN_OPS + 1)])
    req = urllib.request.Request(f"http://{consul_agent.addr}/v1/txn", data=body.encode(), method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 413


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_addr() -> Iterator[str]:
    """A TCP port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


_CALLS: dict[str, Callable[[Store], object]] = {
    "get": lambda s: s.get("k"),
    "list": lambda s: s.list("p/"),
    "create": lambda s: s.create("k", "v"),
    "cas": lambda s: s.cas("k", "v", 7),
    "delete": lambda s: s.delete("k"),
    "transaction": lambda s: s.transaction([Op("create", "k", "v")]),
    "watch": lambda s: s.watch("p/", 7, 0.5),
}


def _assert_fails_fast(addr: str, call: str, within: float, says: str) -> None:
    store = ConsulStore(addr, timeout=1.0, token="s3cr3t-token")
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        _CALLS[call](store)
    assert time.monotonic() - t0 < within
    assert addr in err.value.message and says in err.value.message
    assert "s3cr3t" not in err.value.message and "s3cr3t" not in repr(store)
    store.close()


@pytest.mark.parametrize("call", list(_CALLS))
def test_unreachable_consul_raises_backend_unavailable(call: str) -> None:
    _assert_fails_fast(f"127.0.0.1:{_unused_port()}", call, within=1.5, says="could not be reached")


@pytest.mark.parametrize("call", ["get", "transaction", "watch"])
def test_silent_consul_times_out(silent_addr: str, call: str) -> None:
    # watch may use its own 0.5 s on top of the 1 s per-call bound.
    _assert_fails_fast(silent_addr, call, within=2.5, says="did not answer within 1.0s")


@pytest.mark.consul
def test_leaderless_consul_fails_within_the_timeout() -> None:
    # Consul itself would hold each call ~7 s before "500 No cluster leader"; dockerd
    # gives the plugin 5 s, so the store's own bound must cut in first.
    with ConsulAgent(leader=False) as agent:
        for call in ("get", "create", "transaction"):
            _assert_fails_fast(agent.addr, call, within=2.0, says="did not answer within 1.0s")


@pytest.mark.consul
def test_consul_acl_token_is_sent_and_denials_are_errors_not_lost_races() -> None:
    token = "6c1f4a2e-5d8b-4f3a-9e7c-0a1b2c3d4e5f"
    with ConsulAgent(acl_token=token) as agent:
        allowed = ConsulStore(agent.addr, token=token)
        # py-consul's own Txn.put drops the token; every path here must carry it.
        assert allowed.create("k", "v") and allowed.cas("k", "w", allowed.get("k").version)  # type: ignore[union-attr]
        assert allowed.transaction([Op("create", "t", "v")]) and allowed.delete("t")
        assert [e.key for e in allowed.list("")] == ["k"]
        for token_given in (None, "00000000-0000-0000-0000-00000000dead"):
            denied = ConsulStore(agent.addr, token=token_given)
            for call in ("get", "create", "transaction", "delete"):
                with pytest.raises(BackendUnavailable, match="refused access") as err:
                    _CALLS[call](denied)
                assert agent.addr in err.value.message and "dead" not in err.value.message
            denied.close()
        allowed.close()
