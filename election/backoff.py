"""Jittered exponential backoff for retrying Redis.

"Full jitter" (a uniform draw below an exponentially growing cap) spreads the
retries of many candidates that lost Redis at the same moment, so they don't
reconnect in lockstep when it comes back.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None):
        self.minimum = minimum
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._failures = 0

    def next(self) -> float:
        """Seconds to wait before the next try; grows with each failure."""
        cap = min(self.maximum, self.minimum * (2 ** self._failures))
        self._failures += 1
        return self.minimum + self._rng.random() * (cap - self.minimum) if cap > self.minimum else cap

    def reset(self) -> None:
        self._failures = 0

    @property
    def failures(self) -> int:
        return self._failures
