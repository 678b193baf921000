"""In-process serialisation of NetworkDriver calls: per network, shared by its endpoint
calls and held alone by CreateNetwork/DeleteNetwork; per endpoint, one call at a time.

Endpoint calls of one network touch different records (one key each, written with CAS),
different links and the firewall (which has its own lock), so they may run side by side:
50 containers started at once on one network must not queue behind each other's veth.
A network call still waits for every endpoint call on that network and keeps new ones out
(it reads and removes all of them). Correctness across processes and hosts comes from the
store's CAS, not from these locks; they only avoid wasted work and surprising interleavings.
Locks exist only while someone holds or waits for them, so none is kept per finished endpoint.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class _Shared:
    """Many holders in shared mode, or one alone; a waiting exclusive holder keeps new
    shared ones out (so a DeleteNetwork is not starved by a stream of endpoint calls)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.shared = 0
        self.exclusive = False
        self.waiting_exclusive = 0
        self.users = 0  # holders and waiters: the registry drops the lock at 0


class CallLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._networks: dict[str, _Shared] = {}
        self._keys: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def network(self, nid: str) -> Iterator[None]:
        """CreateNetwork / DeleteNetwork: alone on the network."""
        lock = self._enter_network(nid)
        try:
            with lock.cond:
                lock.waiting_exclusive += 1
                lock.cond.wait_for(lambda: not lock.exclusive and lock.shared == 0)
                lock.waiting_exclusive -= 1
                lock.exclusive = True
            try:
                yield
            finally:
                with lock.cond:
                    lock.exclusive = False
                    lock.cond.notify_all()
        finally:
            self._leave_network(nid, lock)

    @contextmanager
    def endpoint(self, nid: str, eid: str) -> Iterator[None]:
        """An endpoint call: beside other endpoints' calls, alone on its endpoint."""
        lock = self._enter_network(nid)
        try:
            with lock.cond:
                lock.cond.wait_for(lambda: not lock.exclusive and lock.waiting_exclusive == 0)
                lock.shared += 1
            try:
                with self.key(f"{nid}/{eid}"):
                    yield
            finally:
                with lock.cond:
                    lock.shared -= 1
                    lock.cond.notify_all()
        finally:
            self._leave_network(nid, lock)

    @contextmanager
    def key(self, name: str) -> Iterator[None]:
        """A plain mutex named NAME (e.g. the kernel names an endpoint's links take)."""
        with self._guard:
            lock, users = self._keys.get(name, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._keys[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._keys[name]
                if users == 1:
                    del self._keys[name]
                else:
                    self._keys[name] = (lock, users - 1)

    def _enter_network(self, nid: str) -> _Shared:
        with self._guard:
            lock = self._networks.get(nid)
            if lock is None:
                lock = self._networks[nid] = _Shared()
            lock.users += 1
            return lock

    def _leave_network(self, nid: str, lock: _Shared) -> None:
        with self._guard:
            lock.users -= 1
            if lock.users == 0:
                del self._networks[nid]
