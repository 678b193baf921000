"""Background jobs the composition root starts: a check run every so often on its own thread."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def every(interval: float, check: Callable[[], object], name: str) -> threading.Event:
    """Run `check` every `interval` seconds on a daemon thread until the returned event is
    set. A failed check (the store or Docker away) is logged and tried again next time."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                check()
            except Exception as exc:
                log.warning("%s failed, retrying in %.0f s: %s", name, interval, exc)

    threading.Thread(target=loop, name=f"pynet-{name.replace(' ', '-')}", daemon=True).start()
    return stop
