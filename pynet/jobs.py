"""Background jobs the composition root starts: a check run every so often on its own thread."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def every(interval: float, check: Callable[[], object], name: str,
          at_once: bool = False) -> threading.Event:
    """Run `check` every `interval` seconds on a daemon thread until the returned event is
    set (at_once: a first run straight away). A failed check (the store or Docker away) is
    logged and tried again next time."""
    stop = threading.Event()

    def loop() -> None:
        first = at_once
        while first or not stop.wait(interval):
            first = False
            try:
                check()
            except Exception as exc:
                log.warning("%s failed, retrying in %.0f s: %s", name, interval, exc)

    threading.Thread(target=loop, name=f"pynet-{name.replace(' ', '-')}", daemon=True).start()
    return stop
