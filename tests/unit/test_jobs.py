"""pynet/jobs.every: the periodic loop behind the two leak checks and the last-seen report."""
from __future__ import annotations

import threading
import time

from pynet.jobs import every


def _runs(interval: float, fail_first: int, **kwargs) -> tuple[list[float], threading.Event]:
    times: list[float] = []

    def check() -> None:
        times.append(time.monotonic())
        if len(times) <= fail_first:
            raise RuntimeError("the store is away")

    return times, every(interval, check, "test job", **kwargs)


def test_a_failed_run_is_retried_after_retry_after_not_a_whole_interval():
    times, stop = _runs(60.0, fail_first=2, at_once=True, retry_after=0.05)
    try:
        deadline = time.monotonic() + 5
        while len(times) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(times) == 3, times  # two failures retried quickly, then the success
        time.sleep(0.3)
        assert len(times) == 3, "after a success the job waits its whole interval again"
    finally:
        stop.set()


def test_without_retry_after_a_failure_waits_the_interval():
    times, stop = _runs(60.0, fail_first=1, at_once=True)
    try:
        deadline = time.monotonic() + 5
        while not times and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(times) == 1, times
    finally:
        stop.set()


def test_a_stopped_job_runs_no_more():
    times, stop = _runs(5.0, fail_first=0)
    stop.set()
    time.sleep(0.1)
    assert times == []
