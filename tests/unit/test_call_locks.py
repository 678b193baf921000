"""driver/call_locks.py: endpoint calls of one network run side by side, one at a time per
endpoint; a network call runs alone and is not starved; no lock outlives its users."""
from __future__ import annotations

import threading
import time

from driver.call_locks import CallLocks


def run_all(*targets):
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)


def test_endpoints_of_one_network_overlap_but_one_endpoint_does_not():
    locks, inside, most = CallLocks(), [], []
    guard = threading.Lock()

    def call(eid):
        def body():
            with locks.endpoint("n", eid):
                with guard:
                    inside.append(eid)
                    most.append(len(inside))
                time.sleep(0.05)
                with guard:
                    inside.remove(eid)
        return body

    run_all(*(call(f"e{i}") for i in range(5)))
    assert max(most) > 1  # different endpoints together
    most.clear()
    run_all(*(call("same") for _ in range(3)))
    assert max(most) == 1  # the same endpoint one call at a time
    assert locks._networks == {} and locks._keys == {}


def test_a_network_call_is_alone_and_waits_for_endpoint_calls():
    locks, log = CallLocks(), []
    started = threading.Event()

    def endpoint():
        with locks.endpoint("n", "e"):
            started.set()
            time.sleep(0.1)
            log.append("endpoint done")

    def network():
        started.wait(2)
        with locks.network("n"):
            log.append("network")

    def late_endpoint():
        started.wait(2)
        time.sleep(0.03)  # arrives while the network call waits: goes after it
        with locks.endpoint("n", "f"):
            log.append("late endpoint")

    run_all(endpoint, network, late_endpoint)
    assert log == ["endpoint done", "network", "late endpoint"]
    assert locks._networks == {} and locks._keys == {}
