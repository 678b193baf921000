"""Which hosts are alive, judged by this host alone (pure; the clock is passed in).

Each host rewrites its heartbeat key now and then; the store gives every write a new
version. A host whose heartbeat version has not moved for `timeout` seconds of *this*
host's clock is taken for dead (no clocks are compared across hosts). After this host could
not read the store, every host gets a fresh `timeout`: they may have been unable to write.
"""
from __future__ import annotations

from collections.abc import Mapping


class Liveness:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[str, tuple[int | None, float]] = {}  # host -> (version, since)

    def observe(self, beats: Mapping[str, int], hosts: set[str], now: float) -> None:
        """The heartbeat versions read now (a host missing there has none) for `hosts`."""
        for host in hosts | set(beats):
            version = beats.get(host)
            last = self._seen.get(host)
            if last is None or last[0] != version:
                self._seen[host] = (version, now)

    def alive(self, host: str, now: float) -> bool:
        last = self._seen.get(host)
        return last is None or now - last[1] < self.timeout

    def dead(self, now: float) -> set[str]:
        return {h for h in self._seen if not self.alive(h, now)}

    def forgive(self, now: float) -> None:
        """This host lost the store for a while: nobody is judged on that stretch."""
        self._seen = {h: (v, now) for h, (v, _) in self._seen.items()}
