"""A host's store writes whose outcome is never left in doubt.

Every write a host makes that could land late (an address or block claim, a pool hold, a
network or endpoint record) goes out in one transaction with a check that the host's fence
key is still at the version the host last saw:

    txn [ <the write's own ops>, check_version(<fence key>, V) ]

When the store does not answer, the caller is told the write failed, yet the request may
still be on its way (held by a Consul agent cut off from its leader, say) and land later:
an address nobody would ever release, a pool held for a network Docker never got. So the
write is noted as in doubt with a `settle` function, and once the store answers again the
fence is moved on (V -> V'). From then on the late request can only fail its check; anything
that landed before is visible, and `settle` undoes it if it is still exactly what was written
(every value holds a random write id, so it is this host's alone).
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable

from pynet_core.errors import BackendUnavailable
from pynet_core.retry_queue import RetryQueue

from . import keys, records
from .api import Entry, Op, Store

log = logging.getLogger(__name__)

# After this many failed writes in a row the cached fence version is read again, in case
# something other than this process moved or removed the fence key.
_RECHECK_AFTER = 8

Settle = Callable[[Store], None]


def claim_id() -> str:
    """A random id that makes a written value this host's alone."""
    return secrets.token_hex(8)


def delete_if_unchanged(key: str, value: str) -> Settle:
    """The settle of a create: delete `key` if it holds exactly `value`."""
    def settle(store: Store) -> None:
        entry = store.get(key)
        if entry is not None and entry.value == value and store.delete(key, entry.version):
            log.warning("removed %s: written by a request that failed but landed late", key)
    return settle


class FencedWrites:
    def __init__(self, store: Store, host: str, retries: RetryQueue,
                 fence_key: str | None = None) -> None:
        # One FencedWrites per fence key in a process: two would each cache the version and
        # fail each other's checks.
        self.store = store
        self.host = host
        self.fence_key = fence_key or keys.ipam_fence(host)
        self._retries = retries
        self._lock = threading.Lock()
        self._fence: int | None = None
        self._failures = 0
        # What to undo for each write in doubt, by a description of the write.
        self._doubtful: dict[str, Settle] = {}

    # --- writing -------------------------------------------------------------------------
    def create(self, key: str, value: str) -> bool:
        """Create `key` if absent (False if it exists). Raises BackendUnavailable when the
        store does not answer; the create is then settled in the background."""
        return self.transaction([Op("create", key, value)], delete_if_unchanged(key, value),
                                f"create {key} {value}")

    def transaction(self, ops: list[Op], settle: Settle, what: str) -> bool:
        """Apply `ops` atomically, fenced (False: a check failed, nothing written). Raises
        BackendUnavailable when the store does not answer; `settle(store)`, which must be
        idempotent and undo only what is exactly this write's, then runs once the fence has
        moved. `what` names the write (the same write tried twice is settled once)."""
        fence = self._fence_version()
        try:
            # (The write first: a store names the first key in its errors.)
            ok = self.store.transaction([*ops, Op("check_version", self.fence_key, version=fence)])
        except BackendUnavailable:
            self._in_doubt(what, settle)
            raise
        with self._lock:
            self._failures = 0 if ok else self._failures + 1
            recheck = self._failures >= _RECHECK_AFTER
            if recheck:
                self._failures = 0
        if not ok and recheck and self._reread_fence() != fence:
            return self.transaction(ops, settle, what)  # the fence had moved: this try proved nothing
        return ok

    def _fence_version(self) -> int:
        with self._lock:
            if self._fence is not None:
                return self._fence
        return self._reread_fence()

    def _reread_fence(self) -> int:
        entry = self.store.get(self.fence_key)
        if entry is None:
            self.store.create(self.fence_key, records.dump({"host": self.host}))
            entry = self.store.get(self.fence_key)
            if entry is None:
                raise BackendUnavailable(f"the store lost the fence key {self.fence_key} just written")
        with self._lock:
            self._fence = entry.version
        return entry.version

    # --- settling what is in doubt -------------------------------------------------------
    def _in_doubt(self, what: str, settle: Settle) -> None:
        with self._lock:
            self._doubtful[what] = settle
        self._retries.add(f"settling writes of host {self.host} left in doubt", self.settle)

    def retire(self) -> None:
        """Delete the fence key while nothing is in doubt (a host with nothing recorded
        leaves no key behind). As safe as moving it: a late write checks a version the
        absent key no longer has, and the next write makes a new key at a higher version."""
        with self._lock:
            if self._doubtful:
                return
            self._fence = None
        self.store.delete(self.fence_key)

    def in_doubt(self) -> int:
        with self._lock:
            return len(self._doubtful)

    def settle(self) -> None:
        """Move the fence on, then undo every write in doubt that landed. Raises
        BackendUnavailable (to be run again) while the store does not answer."""
        with self._lock:
            pending = dict(self._doubtful)
        if not pending:
            return
        self._move_fence()
        for what, settle in sorted(pending.items()):
            with self._lock:
                if self._doubtful.get(what) is settle:
                    del self._doubtful[what]
            try:
                settle(self.store)
            except BaseException:
                with self._lock:
                    self._doubtful.setdefault(what, settle)
                raise
        with self._lock:
            left = bool(self._doubtful)
        if left:  # writes that fell in doubt while this ran need a fence move of their own
            raise BackendUnavailable("more writes fell in doubt while settling; once more")

    def _move_fence(self) -> None:
        entry: Entry | None = self.store.get(self.fence_key)
        value = records.dump({"host": self.host, "moved": claim_id()})
        if entry is None:
            moved = self.store.create(self.fence_key, value)
        else:
            moved = self.store.cas(self.fence_key, value, entry.version)
        if not moved:
            raise BackendUnavailable(f"fence {self.fence_key} changed under this host; trying again")
        self._reread_fence()


class FencedCreates:
    """The store as records.update() sees it, with every create made through FencedWrites."""

    def __init__(self, writes: FencedWrites) -> None:
        self._writes = writes
        self._store = writes.store

    def get(self, key: str) -> Entry | None:
        return self._store.get(key)

    def create(self, key: str, value: str) -> bool:
        return self._writes.create(key, value)

    def cas(self, key: str, value: str, version: int) -> bool:
        return self._store.cas(key, value, version)

    def delete(self, key: str, version: int | None = None) -> bool:
        return self._store.delete(key, version)
