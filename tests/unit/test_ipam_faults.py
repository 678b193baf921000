"""IPAM with a store that stops answering: nothing leaks, nothing is claimed twice.

FlakyStore models Consul cut off from its leader: while down every call raises
BackendUnavailable, and writes are *held* (like an RPC stuck in a cut agent), to be
delivered later -- or never -- at the test's choice."""
import json

import pytest

from pynet_core import deadline
from pynet_core.errors import BackendUnavailable
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from pynet_core.retry_queue import RetryQueue
from ipam_driver.service import IpamService
from tests.fakes.ipam_client import DockerIpam


class FlakyStore:
    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.down = False  # nothing answers
        self.writes_lost = False  # reads answer, writes time out (the cut agent's case)
        self.held: list = []

    def _check(self, what):
        if self.down:
            raise BackendUnavailable(f"consul at 127.0.0.1:8500 did not answer ({what})")

    def get(self, key):
        self._check("get")
        return self.inner.get(key)

    def list(self, prefix):
        self._check("list")
        return self.inner.list(prefix)

    def transaction(self, ops):
        if self.down or self.writes_lost:
            self.held.append(ops)
            raise BackendUnavailable("consul at 127.0.0.1:8500 did not answer (txn)")
        return self.inner.transaction(ops)

    def create(self, key, value):
        return self.transaction([_op("create", key, value)])

    def cas(self, key, value, version):
        return self.transaction([_op("cas", key, value, version)])

    def delete(self, key, version=None):
        return self.transaction([_op("delete", key, version=version)])

    def deliver(self):
        """The held writes land now (each checked against the store as it is now)."""
        results = [self.inner.transaction(ops) for ops in self.held]
        self.held.clear()
        return results


def _op(verb, key, value="", version=None):
    from pynet_core.store.api import Op
    return Op(verb, key, value, version)


EP = {"com.docker.network.endpoint.name": "web"}


@pytest.fixture
def setup():
    store = FlakyStore()
    svc = DockerIpam(IpamService(store, "h1", retries=RetryQueue(background=False)))
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    return store, svc, pool


def addrs(store):
    return {e.key.rsplit("/", 1)[1]: json.loads(e.value) for e in store.inner.list("v1/ipam/addrs/")}


def test_a_claim_that_lands_late_is_removed_once_the_store_is_back(setup):
    store, svc, pool = setup
    svc.request_address(pool, "", EP)  # warms the fence and h1's block
    store.writes_lost = True
    with pytest.raises(BackendUnavailable, match="127.0.0.1:8500"):
        svc.request_address(pool, "", {"com.docker.network.endpoint.name": "lost"})
    store.down = True
    assert svc.retries.run_once() == 1  # still down: kept
    store.down = store.writes_lost = False
    assert store.deliver() == [True]  # the request that "failed" landed after all
    assert "10.1.0.2" in addrs(store)
    assert svc.retries.run_once() == 0
    assert list(addrs(store)) == ["10.1.0.1"]


def test_a_claim_that_lands_after_the_fence_moved_fails(setup):
    store, svc, pool = setup
    svc.request_address(pool, "", EP)
    store.writes_lost = True
    with pytest.raises(BackendUnavailable):
        svc.request_address(pool, "", {"com.docker.network.endpoint.name": "lost"})
    late = list(store.held)
    store.held.clear()
    store.writes_lost = False
    assert svc.retries.run_once() == 0  # fence moved, nothing had landed
    store.held = late
    assert store.deliver() == [False]
    assert list(addrs(store)) == ["10.1.0.1"]
    # and the host allocates as before, with the new fence
    assert svc.request_address(pool, "", {"com.docker.network.endpoint.name": "next"}) == "10.1.0.2/24"


def test_a_release_that_failed_is_done_once_the_store_is_back(setup):
    store, svc, pool = setup
    svc.request_address(pool, "", EP)
    store.down = True
    with pytest.raises(BackendUnavailable):
        svc.release_address(pool, "10.1.0.1")
    store.held.clear()  # that delete never arrives
    store.down = False
    assert svc.retries.run_once() == 0
    assert addrs(store) == {}


def test_a_queued_release_never_frees_a_later_claim(setup):
    store, svc, pool = setup
    svc.request_address(pool, "", EP)
    store.writes_lost = True
    with pytest.raises(BackendUnavailable):
        svc.release_address(pool, "10.1.0.1")
    store.writes_lost = False
    store.deliver()  # the release did land after all...
    assert svc.request_address(pool, "10.1.0.1", {"com.docker.network.endpoint.name": "new"}) == "10.1.0.1/24"
    assert svc.retries.run_once() == 0  # ...so the queued retry must leave the new claim alone
    assert addrs(store)["10.1.0.1"]["name"] == "new"


def test_a_failed_pool_release_is_queued(setup):
    store, svc, pool = setup
    store.down = True
    with pytest.raises(BackendUnavailable):
        svc.release_pool(pool)
    store.held.clear()
    store.down = False
    svc.retries.run_once()
    assert store.inner.get(keys.ipam_space("LocalDefault")).value == '{"pools":{}}'


class Clock:
    """Stands in for the `time` module of pynet_core.deadline: time moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_call_budget_clamps_and_runs_out(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(deadline, "time", clock)
    assert deadline.clamp(3.0) == 3.0
    with deadline.budget(1.0):
        assert 0.9 < deadline.clamp(3.0) <= 1.0
        with deadline.budget(5.0):  # a nested budget never extends the outer one
            assert deadline.clamp(3.0) <= 1.0
        clock.now += 0.75
        assert deadline.clamp(3.0) == pytest.approx(0.25) and deadline.clamp(0.1) == 0.1
        clock.now += 0.5  # spent: what is left is negative, a request still gets a sliver
        assert deadline.remaining() == pytest.approx(-0.25) and deadline.clamp(3.0) == 0.001
    assert deadline.remaining() is None and deadline.clamp(None) is None
    with deadline.budget(0):
        assert deadline.remaining() <= 0


def test_consul_store_fails_at_once_when_the_budget_is_spent():
    from pynet_core.store.consul import ConsulStore
    store = ConsulStore("127.0.0.1:1")
    with deadline.budget(0), pytest.raises(BackendUnavailable, match=r"consul at 127.0.0.1:1 .*used up its"):
        store.get("k")


def test_the_same_address_tried_twice_in_doubt_is_settled_whichever_lands(setup):
    store, svc, pool = setup
    svc.request_address(pool, "", EP)
    store.writes_lost = True
    for name in ("first", "second"):  # both choose 10.1.0.2: the first never answered
        with pytest.raises(BackendUnavailable):
            svc.request_address(pool, "", {"com.docker.network.endpoint.name": name})
    first, _second = store.held
    store.writes_lost = False
    store.held = [first]
    assert store.deliver() == [True]  # the first one lands late
    assert addrs(store)["10.1.0.2"]["name"] == "first"
    assert svc.retries.run_once() == 0
    assert list(addrs(store)) == ["10.1.0.1"]


def test_repairs_run_from_two_threads_run_each_task_once():
    """A caller's run_once() beside the background loop: a task is never run twice at once,
    and never removed twice (that raised ValueError in the loser)."""
    import threading

    from pynet_core.retry_queue import RetryQueue

    queue = RetryQueue(background=False)
    started, go, runs = threading.Event(), threading.Event(), []

    def slow_task():
        runs.append(1)
        started.set()
        go.wait(5)

    queue.add("a slow task", slow_task)
    results: list[object] = []

    def run():
        try:
            results.append(queue.run_once())
        except Exception as exc:  # the defect: the second remove raised
            results.append(exc)

    first = threading.Thread(target=run)
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=run)
    second.start()
    go.set()
    first.join(5)
    second.join(5)
    assert results == [0, 0] and runs == [1]
