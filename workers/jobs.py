"""Example jobs shipped with Baton (see workers/schedule.py)."""

from __future__ import annotations

import logging
import time

from election.logfmt import log_event

log = logging.getLogger("baton.jobs")


def log_time() -> str:
    """The seed's job: log the current time."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log_event(log, logging.INFO, "log_time", now=now)
    return now


def heartbeat() -> float:
    """A short-interval job that shows the schedule is alive."""
    now = time.time()
    log_event(log, logging.INFO, "heartbeat", at=round(now, 3))
    return now
