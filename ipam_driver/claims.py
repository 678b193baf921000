"""Create-if-absent claims whose outcome is never left in doubt.

A claim (an address or a block key) is written in one transaction with a check that this
host's fence key is still at the version the host last saw:

    txn [ check_version(v1/ipam/fences/<host>, V), create(<claim key>, value) ]

When the store does not answer, the caller is told the claim failed, yet the request may
still be on its way (held by a Consul agent cut off from its leader, say) and land later:
an address nobody would ever release. So the claim is noted as in doubt, and once the store
answers again the fence is moved on (V -> V'). From then on the late request can only fail
its check; anything that landed before is visible, and is deleted if its value is still
exactly the one written (every value holds a random claim id, so it is ours alone).
"""
from __future__ import annotations

import logging
import secrets
import threading

from pynet.errors import BackendUnavailable
from pynet.store import keys
from pynet.store.api import Entry, Op, Store

from . import models
from .models import Fence
from .repair import RepairQueue

log = logging.getLogger(__name__)

# After this many failed claims in a row the cached fence version is read again, in case
# something other than this process moved or removed the fence key.
_RECHECK_AFTER = 8


def claim_id() -> str:
    return secrets.token_hex(8)


class Claims:
    def __init__(self, store: Store, host: str, repairs: RepairQueue) -> None:
        self.store = store
        self.host = host
        self.fence_key = keys.ipam_fence(host)
        self._repairs = repairs
        self._lock = threading.Lock()
        self._fence: int | None = None
        self._failures = 0
        # (key, value) of every claim in doubt: the same key may be tried more than once.
        self._doubtful: set[tuple[str, str]] = set()

    # --- claiming ----------------------------------------------------------------------
    def create(self, key: str, value: str) -> bool:
        """Create `key` if absent (False if it exists). Raises BackendUnavailable when the
        store does not answer; the claim is then settled in the background."""
        fence = self._fence_version()
        try:
            # (The claim first: a store names the first key in its errors.)
            ok = self.store.transaction([Op("create", key, value),
                                         Op("check_version", self.fence_key, version=fence)])
        except BackendUnavailable:
            self._in_doubt(key, value)
            raise
        with self._lock:
            self._failures = 0 if ok else self._failures + 1
            recheck = self._failures >= _RECHECK_AFTER
            if recheck:
                self._failures = 0
        if not ok and recheck and self._reread_fence() != fence:
            return self.create(key, value)  # the fence had moved: this try proved nothing
        return ok

    def _fence_version(self) -> int:
        with self._lock:
            if self._fence is not None:
                return self._fence
        return self._reread_fence()

    def _reread_fence(self) -> int:
        entry = self.store.get(self.fence_key)
        if entry is None:
            self.store.create(self.fence_key, models.encode(Fence(self.host)))
            entry = self.store.get(self.fence_key)
            if entry is None:
                raise BackendUnavailable(f"the store lost the fence key {self.fence_key} just written")
        with self._lock:
            self._fence = entry.version
        return entry.version

    # --- settling what is in doubt -----------------------------------------------------
    def _in_doubt(self, key: str, value: str) -> None:
        with self._lock:
            self._doubtful.add((key, value))
        self._repairs.add(f"settling claims of host {self.host} left in doubt", self.settle)

    def settle(self) -> None:
        """Move the fence on, then delete every claim in doubt that landed. Raises
        BackendUnavailable (to be run again) while the store does not answer."""
        with self._lock:
            pending = set(self._doubtful)
        if not pending:
            return
        self._move_fence()
        for key, value in sorted(pending):
            entry = self.store.get(key)
            if entry is not None and entry.value == value:
                if self.store.delete(key, entry.version):
                    log.warning("removed %s: claimed by a request that failed but landed late", key)
            with self._lock:
                self._doubtful.discard((key, value))
        with self._lock:
            left = bool(self._doubtful)
        if left:  # claims that fell in doubt while this ran need a fence move of their own
            raise BackendUnavailable("more claims fell in doubt while settling; once more")

    def _move_fence(self) -> None:
        entry: Entry | None = self.store.get(self.fence_key)
        value = models.encode(Fence(self.host, moved=claim_id()))
        if entry is None:
            moved = self.store.create(self.fence_key, value)
        else:
            moved = self.store.cas(self.fence_key, value, entry.version)
        if not moved:
            raise BackendUnavailable(f"fence {self.fence_key} changed under this host; trying again")
        self._reread_fence()


class FencedCreates:
    """The store as records.update() sees it, with every create made through Claims."""

    def __init__(self, claims: Claims) -> None:
        self._claims = claims
        self._store = claims.store

    def get(self, key: str) -> Entry | None:
        return self._store.get(key)

    def create(self, key: str, value: str) -> bool:
        return self._claims.create(key, value)

    def cas(self, key: str, value: str, version: int) -> bool:
        return self._store.cas(key, value, version)

    def delete(self, key: str, version: int | None = None) -> bool:
        return self._store.delete(key, version)
