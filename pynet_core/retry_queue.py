"""Store writes to finish once the store answers again.

When the store is unreachable a plugin call fails at once (dockerd must not hang), but some
failures would leak: Docker ignores a failed ReleaseAddress/ReleasePool and never asks
again, and a claim whose answer never came may still land later. Such work is queued here
and retried by one background thread, started on demand, that ends when the queue is empty.
It lives in memory only: a plugin restarted meanwhile forgets it (docs/consul.md).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pynet_core.errors import BackendUnavailable, PynetError

log = logging.getLogger(__name__)


@dataclass
class _Task:
    what: str
    run: Callable[[], None]
    tries: int = 0


class RetryQueue:
    def __init__(self, first_delay: float = 1.0, max_delay: float = 5.0,
                 background: bool = True) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.background = background  # unit tests call run_once() themselves
        self._tasks: list[_Task] = []
        self._lock = threading.Lock()
        # One run at a time (the background loop, or a caller's run_once): a task is never
        # run twice at once, and only the run that ran it removes it.
        self._running = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, what: str, run: Callable[[], None]) -> None:
        """Queue `run` (idempotent; raises BackendUnavailable to be tried again later)."""
        with self._lock:
            if any(t.what == what for t in self._tasks):
                return
            self._tasks.append(_Task(what, run))
            log.warning("queued for when the store answers again: %s", what)
            if self.background and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="pynet-repair", daemon=True)
                self._thread.start()

    def pending(self) -> list[str]:
        with self._lock:
            return [t.what for t in self._tasks]

    def run_once(self) -> int:
        """Try every queued task once; returns how many are left."""
        with self._running:
            return self._run_once()

    def _run_once(self) -> int:
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            task.tries += 1
            try:
                task.run()
            except BackendUnavailable as exc:
                if task.tries in (1, 10) or task.tries % 60 == 0:
                    log.warning("still waiting for the store (%s): %s", task.what, exc.message)
                continue
            except PynetError as exc:
                log.error("gave up %s: %s", task.what, exc.message)
            except Exception:  # a bug: never retry it forever
                log.exception("gave up %s", task.what)
            else:
                log.info("done after %d tries: %s", task.tries, task.what)
            with self._lock:
                self._tasks.remove(task)
        with self._lock:
            return len(self._tasks)

    def _loop(self) -> None:
        delay = self.first_delay
        while True:
            time.sleep(delay)
            if self.run_once() == 0:
                with self._lock:  # a task added since run_once() counted keeps the thread
                    if not self._tasks:
                        self._thread = None
                        return
            delay = min(delay * 2, self.max_delay)
