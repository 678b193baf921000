"""Background jobs the composition root starts: a check run every so often on its own thread."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def every(interval: float, check: Callable[[], object], name: str,
          at_once: bool = False, retry_after: float | None = None) -> threading.Event:
    """Run `check` every `interval` seconds on a daemon thread until the returned event is
    set (at_once: a first run straight away). A failed check (the store or Docker away) is
    logged and tried again next time, or after `retry_after` seconds when given (a job whose
    missing run misleads others, like the last-seen report, should not wait a whole period)."""
    stop = threading.Event()

    def loop() -> None:
        wait = 0.0 if at_once else interval
        while not stop.wait(wait):
            wait = interval
            try:
                check()
            except Exception as exc:
                if retry_after is not None:
                    wait = retry_after
                log.warning("%s failed, retrying in %.0f s: %s", name, wait, exc)

    threading.Thread(target=loop, name=f"pynet-{name.replace(' ', '-')}", daemon=True).start()
    return stop
