"""The plugin starts while its store is down: calls that need no state answer, the others
answer a clear 503 and change nothing, and restore runs exactly once, as soon as the store
answers (from the next call or the background thread, never both at once)."""
import threading
import time

import pytest

from pynet import app as app_module
from pynet import readiness
from pynet_core import deadline
from pynet.app import Deps
from pynet_core.errors import BackendUnavailable
from pynet.readiness import RestoreGate
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client
from tests.harness.wait import wait_until

OLD, NEW = "a" * 64, "b" * 64  # a network recorded before the "reboot", one created after
ERR = "consul at 10.0.0.5:8500 could not be reached (listing prefix 'v1/hosts/h1/networks/')"
NOT_YET = "pynet has not restored its state yet"


class DownStore(MemoryStore):
    """A MemoryStore that raises BackendUnavailable on every call while `down`."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls_while_down = 0

    def _gate(self) -> None:
        if self.down:
            self.calls_while_down += 1
            raise BackendUnavailable(f"{ERR}: [Errno 111] Connection refused")

    def get(self, key):
        self._gate()
        return super().get(key)

    def list(self, prefix):
        self._gate()
        return super().list(prefix)

    def transaction(self, ops):
        self._gate()
        return super().transaction(ops)

    def snapshot(self):
        return MemoryStore.list(self, "")


class Restores:
    """Wraps pynet.app.restore: counts runs, and how many ran at the same time."""

    def __init__(self, real) -> None:
        self.real = real
        self.started = self.succeeded = self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, *args):
        with self._lock:
            self.started += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.real(*args)
        finally:
            with self._lock:
                self.running -= 1
        with self._lock:
            self.succeeded += 1


@pytest.fixture
def restores(monkeypatch):
    counter = Restores(app_module.restore)
    monkeypatch.setattr(app_module, "restore", counter)
    return counter


@pytest.fixture
def make_app():
    gates = []

    def make(store, netlink=None, **kwargs):
        deps = Deps(store=store, netlink=netlink or FakeNetlink(), firewall=RecordingFirewall())
        client = app_client(deps, host_id="h1", **kwargs)
        gates.append(client.gate)
        return client.app, deps, client.call

    yield make
    for gate in gates:
        gate.close()
        assert gate._thread is None or not gate._thread.is_alive()


def create_network(call, nid, pool):
    return call("NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": pool.replace("0/24", "1/24")}],
        "IPv6Data": []})


@pytest.fixture
def rebooted(make_app):
    """A store holding one network from before a reboot, now down; a fresh kernel."""
    store = DownStore()
    _, _, call = make_app(store)
    assert create_network(call, OLD, "10.1.0.0/24") == (200, {})
    store.down = True
    return store


def test_starts_with_the_store_down_and_answers_when_it_is_back(rebooted, make_app, restores,
                                                                 monkeypatch):
    monkeypatch.setattr(readiness, "FIRST_RETRY", 0.05)  # the thread's checks stay in this test
    monkeypatch.setattr(readiness, "MAX_RETRY", 0.05)
    store = rebooted
    app, deps, call = make_app(store)  # did not raise
    gate = app.extensions["pynet"]["gate"]
    assert not gate.restored and restores.started == 1 and restores.succeeded == 0

    assert call("Plugin.Activate") == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
    assert call("NetworkDriver.GetCapabilities")[0] == 200
    assert call("IpamDriver.GetCapabilities")[0] == 200
    assert call("IpamDriver.GetDefaultAddressSpaces") == (
        200, {"LocalDefaultAddressSpace": "LocalDefault", "GlobalDefaultAddressSpace": "GlobalDefault"})

    before = store.snapshot()
    status, answer = create_network(call, NEW, "10.2.0.0/24")
    assert status == 503 and answer["Error"] == answer["Err"]
    assert answer["Err"].startswith(NOT_YET) and ERR in answer["Err"] and "retrying" in answer["Err"]
    status, answer = call("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": "10.2.0.0/24"})
    assert status == 503 and NOT_YET in answer["Err"] and ERR in answer["Err"]
    assert deps.netlink.state == {} and store.snapshot() == before  # nothing made, nothing written
    assert deps.firewall.networks == {}

    store.down = False
    assert create_network(call, NEW, "10.2.0.0/24") == (200, {})
    assert gate.restored and restores.succeeded == 1 and restores.most_at_once == 1
    # The recorded network came back with the late restore, next to the new one.
    assert {"pn-" + OLD[:12], "pn-" + NEW[:12]} <= set(deps.netlink.state)
    assert set(deps.firewall.networks) == {OLD, NEW}

    # The background thread, when it wakes, finds the work done and ends without restoring.
    gate._thread.join(timeout=5)
    assert not gate._thread.is_alive() and restores.succeeded == 1


def test_the_background_thread_restores_without_any_call(rebooted, make_app, restores, monkeypatch):
    monkeypatch.setattr(readiness, "FIRST_RETRY", 0.01)
    monkeypatch.setattr(readiness, "MAX_RETRY", 0.02)
    store = rebooted
    app, deps, call = make_app(store)
    gate = app.extensions["pynet"]["gate"]
    wait_until(lambda: restores.started >= 3, 10, "the background thread retried the restore 3 times",
               interval=0.005)  # it keeps trying while the store is down
    assert not gate.restored and deps.netlink.state == {}

    store.down = False
    wait_until(lambda: gate.restored, 10, "the background thread restored", interval=0.005)
    gate._thread.join(timeout=5)
    assert not gate._thread.is_alive()
    assert "pn-" + OLD[:12] in deps.netlink.state  # restored with no call at all
    assert restores.succeeded == 1 and restores.most_at_once == 1
    started = restores.started
    assert create_network(call, NEW, "10.2.0.0/24") == (200, {})
    assert restores.started == started  # restore ran once and for all


def test_the_first_call_and_the_background_thread_never_restore_at_once(rebooted, make_app, restores,
                                                                         monkeypatch):
    """Both race for the restore as soon as the store answers: exactly one runs it."""
    monkeypatch.setattr(readiness, "FIRST_RETRY", 0.001)
    monkeypatch.setattr(readiness, "MAX_RETRY", 0.001)
    store = rebooted
    _, deps, call = make_app(store)
    wait_until(lambda: restores.started >= 2, 10, "the background thread retried the restore",
               interval=0.005)
    store.down = False
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        call("NetworkDriver.EndpointOperInfo", {"NetworkID": OLD, "EndpointID": "e" * 64})))
        for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert restores.succeeded == 1 and restores.most_at_once == 1
    assert [status for status, _ in answers] == [404] * 4  # past the gate: the endpoint is unknown
    assert "pn-" + OLD[:12] in deps.netlink.state


def test_a_bug_in_restore_still_stops_start_up(make_app):
    store = DownStore()
    store.list = lambda prefix: (_ for _ in ()).throw(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        make_app(store)
    assert not [t for t in threading.enumerate() if t.name == "pynet-restore"]  # nor retries


def test_a_kernel_refusal_for_one_network_does_not_stop_start_up(rebooted, make_app):
    """Issue 9, B: one network the kernel refuses to bring back is logged; the plugin starts,
    serves the others, and can still delete the broken one."""
    rebooted.down = False
    kernel = FakeNetlink()
    kernel.fail_on.add("ensure_bridge")
    app, deps, call = make_app(rebooted, kernel)
    assert app.extensions["pynet"]["gate"].restored
    assert "pn-" + OLD[:12] not in kernel.state
    kernel.fail_on.clear()
    assert create_network(call, NEW, "10.2.0.0/24") == (200, {})
    assert call("NetworkDriver.DeleteNetwork", {"NetworkID": OLD}) == (200, {})
    assert [e.key for e in rebooted.list("v1/hosts/h1/networks/")] == ["v1/hosts/h1/networks/" + NEW]


def test_a_late_restore_that_hits_a_bug_answers_a_clear_500(rebooted, make_app, restores):
    store = rebooted
    kernel = FakeNetlink()
    app, _, call = make_app(store, kernel)
    store.down = False
    kernel.fail_on.add("links")  # restore as a whole fails, not one network
    status, answer = create_network(call, NEW, "10.2.0.0/24")
    assert status == 500 and "could not restore its state" in answer["Err"]
    assert "injected failure in links" in answer["Err"]
    kernel.fail_on.clear()
    assert create_network(call, NEW, "10.2.0.0/24") == (200, {})
    assert app.extensions["pynet"]["gate"].restored and restores.succeeded == 1


def test_without_restore_on_start_the_gate_is_open(make_app, restores):
    store = DownStore()
    store.down = True
    app, _, call = make_app(store, restore_on_start=False)
    assert app.extensions["pynet"]["gate"].restored and restores.started == 0
    status, answer = create_network(call, NEW, "10.2.0.0/24")
    assert status == 503 and ERR in answer["Err"] and NOT_YET not in answer["Err"]  # the store's own error


# --- RestoreGate alone: ordering between the background thread and calls -----------------------


class SlowRestore:
    """A restore whose attempts fail while `down`, and that can be held mid-way."""

    def __init__(self) -> None:
        self.down = True
        self.hold = threading.Event()
        self.hold.set()
        self.inside = threading.Event()
        self.attempts = 0
        self.by = []  # the thread of each attempt

    def __call__(self) -> None:
        self.attempts += 1
        self.by.append(threading.current_thread().name)
        self.inside.set()
        self.hold.wait(10)
        self.inside.clear()
        if self.down:
            raise BackendUnavailable(f"{ERR} (attempt {self.attempts})")


class WatchedLock:
    """Stands in for the gate's lock and tells the test who waits for it, and how long each
    asked to wait: events to wait on instead of sleeping and hoping the other thread got there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = threading.Condition()
        self.waiting: set[str] = set()
        self.asked: list[tuple[str, float]] = []  # (thread name, timeout) of every acquire

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        name = threading.current_thread().name
        with self._seen:
            self.waiting.add(name)
            self.asked.append((name, timeout))
            self._seen.notify_all()
        try:
            return self._lock.acquire(blocking, timeout)
        finally:
            with self._seen:
                self.waiting.discard(name)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def wait_for_waiter(self, name: str, timeout: float = 10.0) -> None:
        with self._seen:
            assert self._seen.wait_for(lambda: name in self.waiting, timeout), \
                f"thread {name!r} did not start waiting for the restore lock within {timeout}s"


@pytest.fixture
def slow_gate():
    restore = SlowRestore()
    gate = RestoreGate(restore, first_retry=0.01, max_retry=0.01)
    gate._lock = WatchedLock()
    yield restore, gate
    restore.hold.set()
    gate.close()


def _stuck_in_background(restore: SlowRestore) -> None:
    """Hold the next attempt mid-way and wait until the background thread is inside it."""
    restore.hold.clear()
    assert restore.inside.wait(10), "the background thread did not retry the restore within 10s"


def test_a_call_waits_for_a_running_restore_and_does_not_run_it_again(slow_gate):
    restore, gate = slow_gate
    gate.start()
    assert restore.attempts == 1 and not gate.restored
    _stuck_in_background(restore)  # the background thread is restoring, and stuck
    restore.down = False
    done = []
    caller = threading.Thread(target=lambda: (gate.ensure(), done.append(True)), name="caller")
    caller.start()
    gate._lock.wait_for_waiter("caller")
    assert not done and caller.is_alive()  # the call waits for the restore in progress
    restore.hold.set()
    caller.join(5)
    assert done == [True] and gate.restored
    assert restore.by == ["MainThread", "pynet-restore"]  # start, then the background thread


def test_a_call_does_not_wait_longer_than_its_budget(slow_gate):
    restore, gate = slow_gate
    gate.start()
    _stuck_in_background(restore)
    started = time.monotonic()
    with deadline.budget(0.3), pytest.raises(BackendUnavailable) as exc:
        gate.ensure()
    waited = time.monotonic() - started
    # It asked the lock for what was left of its 0.3 s, not for the whole call budget...
    name, asked = gate._lock.asked[-1]
    assert name == "MainThread" and 0.25 < asked <= 0.3
    # ...and really waited that long (the bound above is the clock's lower limit; the upper
    # one only rules out a wait of the full budget, however loaded the machine).
    assert 0.25 < waited < deadline.CALL_BUDGET
    assert exc.value.message.startswith(NOT_YET) and "still running" in exc.value.message
    assert ERR in exc.value.message and restore.by == ["MainThread", "pynet-restore"]


def test_a_call_that_waited_reports_the_failure_it_waited_for(slow_gate):
    restore, gate = slow_gate
    gate.start()
    _stuck_in_background(restore)
    errors = []

    def call():
        try:
            gate.ensure()
        except BackendUnavailable as e:
            errors.append(e.message)
    caller = threading.Thread(target=call, name="caller")
    caller.start()
    gate._lock.wait_for_waiter("caller")  # it read the attempt count and waits for the lock
    restore.hold.set()  # the background attempt fails (the store is still down)
    caller.join(5)
    assert len(errors) == 1 and NOT_YET in errors[0] and ERR in errors[0]
    assert "caller" not in restore.by  # it reported that failure instead of trying again at once

