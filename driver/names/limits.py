"""Per-source token buckets with a bounded memory (pure: the caller gives the time).

Each source has a bucket of `burst` tokens refilled at `rate` per second; a query takes one
token or is refused. At most `max_sources` buckets are kept: the one least recently used is
forgotten first, and a forgotten source starts again with a full bucket. A flood from many
spoofed sources therefore costs a bounded dictionary, and what it can win is at most one
burst per forgotten source; the global bound on concurrent forwards (server.py) caps the
work that can cause.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    rate: float = 100.0          # tokens per second
    burst: float = 200.0         # bucket size
    max_sources: int = 4096
    _buckets: "OrderedDict[str, _Bucket]" = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1 or self.max_sources < 1:
            raise ValueError("rate >= 0, burst >= 1 and max_sources >= 1 are required")

    def allow(self, source: str, now: float) -> bool:
        """Take one token of `source`'s bucket at time `now` (seconds, monotonic)."""
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[source] = bucket
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            elapsed = max(0.0, now - bucket.stamp)  # a clock going back refills nothing
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.stamp = max(bucket.stamp, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def __len__(self) -> int:
        return len(self._buckets)
