"""Waiting for a condition inside a benchmark, bounded so a run never hangs."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark timed out waiting for {what}")
        time.sleep(interval)
