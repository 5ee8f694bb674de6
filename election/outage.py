"""A Redis outage as a few log lines, not one per retry.

Every loop that talks to Redis (the elector, the scheduler, the worker)
retries on its own schedule, often every second or faster. Logging each
failure would bury everything else during an outage — hundreds of lines a
minute per process — so a loop reports through an :class:`OutageLog`:

- ``redis_unreachable`` (warn) on the first failure, with the error;
- ``redis_still_unreachable`` (warn) after ``SUMMARY_FIRST_S``, then at
  doubling intervals up to ``SUMMARY_MAX_S``: how long, how many failures,
  the last error;
- ``redis_recovered`` (info) once Redis answers again: how long it was down.

A full Redis (``maxmemory`` reached with ``noeviction``: it answers, but
refuses writes that need memory) is a different trouble with a different
fix, so it is reported as ``redis_oom`` / ``redis_still_oom`` with that fix,
and ``redis_recovered`` when writes go through again.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from redis.exceptions import OutOfMemoryError

from .logfmt import log_event

# The first summary comes this long after the first failure; each next one
# twice as late as the one before, capped so that a long outage still shows
# up every few minutes.
SUMMARY_FIRST_S = 10.0
SUMMARY_MAX_S = 300.0

# What an operator does about a full Redis.
OOM_FIX = ("Redis reached maxmemory and evicts nothing (noeviction): free memory (find the largest keys with "
           "`redis-cli --bigkeys` or `redis-cli --memkeys`, then DEL or EXPIRE them) or move to a larger plan; "
           "Baton resumes by itself once writes succeed")


class OutageLog:
    def __init__(self, logger: logging.Logger, site: str, role: str, clock: Callable[[], float] = time.monotonic):
        self._log = logger
        self._site = site
        self._role = role
        self._clock = clock
        self._since: Optional[float] = None
        self._failures = 0
        self._next_summary = 0.0
        self._summary_every = SUMMARY_FIRST_S
        self._full = False

    @property
    def full(self) -> bool:
        """True while the current trouble is a full Redis (OOM), not an outage."""
        return self._since is not None and self._full

    def failed(self, exc: BaseException, **fields) -> None:
        now = self._clock()
        self._failures += 1
        error = f"{type(exc).__name__}: {exc}"
        full = isinstance(exc, OutOfMemoryError)
        if full:
            fields = {**fields, "fix": OOM_FIX}
        if self._since is None or full != self._full:
            self._since = now
            self._full = full
            self._summary_every = SUMMARY_FIRST_S
            self._next_summary = now + self._summary_every
            log_event(self._log, logging.ERROR if full else logging.WARNING,
                      "redis_oom" if full else "redis_unreachable", site=self._site, role=self._role,
                      error=error, **fields)
        elif now >= self._next_summary:
            self._summary_every = min(self._summary_every * 2, SUMMARY_MAX_S)
            self._next_summary = now + self._summary_every
            log_event(self._log, logging.ERROR if full else logging.WARNING,
                      "redis_still_oom" if full else "redis_still_unreachable", site=self._site, role=self._role,
                      for_s=round(now - self._since), failures=self._failures, error=error, **fields)

    def succeeded(self) -> None:
        if self._since is None:
            return
        log_event(self._log, logging.INFO, "redis_recovered", site=self._site, role=self._role,
                  after_s=round(self._clock() - self._since, 1), failures=self._failures)
        self._since = None
        self._failures = 0
