"""Waiting for a condition, bounded so a test or benchmark never hangs."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.005, what: str = "condition"):
    """Poll until predicate() is truthy and return its value; a generous bound only to avoid hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
