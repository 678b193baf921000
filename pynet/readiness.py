"""Restore once, even when the store is down at start.

`pynet serve --store consul` must start while Consul is unreachable (after a host reboot
during an outage dockerd could not even activate a plugin that exits), and answer every call
like Docker's own drivers do: at once, with an error saying what is wrong. RestoreGate owns
"restore has run": start() tries it once, and if the store is unreachable keeps retrying in a
background thread; every plugin call that touches state first calls ensure(), which passes
once restore has run, tries it itself otherwise, and else fails with BackendUnavailable.

Restore never runs twice at once, and no call that needs it runs while it is still pending:
both the background thread and ensure() restore only under one lock, and a call proceeds
only after a restore finished. ensure() waits for that lock at most what is left of the
call's budget (driver/deadline.py), so dockerd still gets its answer in time.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pynet_core import deadline
from pynet_core.errors import BackendUnavailable, PynetError, describe_error

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0  # seconds before the first background retry; doubles up to MAX_RETRY
MAX_RETRY = 15.0


class RestoreGate:
    def __init__(self, restore: Callable[[], None], *, restored: bool = False,
                 first_retry: float | None = None, max_retry: float | None = None) -> None:
        self._restore = restore
        self._restored = restored
        self.first_retry = FIRST_RETRY if first_retry is None else first_retry
        self.max_retry = MAX_RETRY if max_retry is None else max_retry
        self._lock = threading.Lock()  # held for every restore attempt
        self._attempts = 0  # finished attempts, to tell whether one ended while we waited
        self._last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def restored(self) -> bool:
        return self._restored

    def start(self) -> None:
        """Restore now. An unreachable store is retried in the background; anything else
        (a bug, a kernel that refuses) propagates: start-up must fail on it."""
        with self._lock:
            if self._restored:
                return
            try:
                self._attempt()
            except BackendUnavailable as exc:
                log.warning("cannot restore pynet's state at start: %s; every call that needs it "
                            "answers an error until it can, retrying in the background", exc.message)
                self._thread = threading.Thread(target=self._retry, name="pynet-restore", daemon=True)
                self._thread.start()

    def ensure(self) -> None:
        """Return once restore has run; else try it (within the call's budget) or raise
        BackendUnavailable saying why not (a PynetError, an internal error, if restore hit a bug)."""
        if self._restored:
            return
        seen = self._attempts
        left = deadline.remaining()
        wait = deadline.CALL_BUDGET if left is None else min(max(left, 0.0), deadline.CALL_BUDGET)
        if not self._lock.acquire(timeout=wait):
            last = f" (the last one failed: {self._last_error})" if self._last_error else ""
            raise self._not_yet(f"a restore attempt is still running after {wait:.1f}s{last}")
        try:
            if self._restored:
                return
            if self._attempts != seen:  # one failed while we waited: don't hit the store again
                raise self._not_yet(self._last_error)
            try:
                self._attempt()
            except BackendUnavailable as exc:
                raise self._not_yet(exc.message) from None
            except Exception as exc:  # a bug or a kernel refusal: a clear 500, the traceback logged
                log.exception("restoring pynet's state failed")
                detail = describe_error(exc)
                raise PynetError(f"pynet could not restore its state: {detail} (see the plugin log)") from None
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the background retries (tests; the thread is a daemon otherwise)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- internals (the caller holds self._lock) ------------------------------------------

    def _attempt(self) -> None:
        try:
            self._restore()
        except BaseException as exc:
            self._attempts += 1
            self._last_error = describe_error(exc)
            raise
        self._attempts += 1
        self._restored = True
        if self._attempts > 1:
            log.info("restored pynet's state after %d attempts", self._attempts)

    def _not_yet(self, why: str) -> BackendUnavailable:
        return BackendUnavailable(f"pynet has not restored its state yet: {why}; "
                                  "it keeps retrying in the background")

    def _retry(self) -> None:
        delay = self.first_retry
        tries = 0
        while not self._stop.wait(delay):
            with self._lock:
                if self._restored:
                    return
                tries += 1
                try:
                    self._attempt()
                    return
                except Exception as exc:
                    if tries in (1, 10) or tries % 60 == 0:  # not every 15 s for hours
                        if isinstance(exc, BackendUnavailable):
                            log.warning("still cannot restore pynet's state (background try %d): %s",
                                        tries, exc.message)
                        else:  # a bug or a kernel refusal: keep the traceback
                            log.exception("restoring pynet's state failed (background try %d)", tries)
            delay = min(delay * 2, self.max_retry)
