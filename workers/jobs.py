"""Example jobs shipped with Baton (see workers/schedule.py)."""

from __future__ import annotations

import logging
import time

from election.logfmt import log_event

from .context import current_run
from .fencing import fenced_set

log = logging.getLogger("baton.jobs")


def log_time() -> str:
    """The seed's job: log the current time."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log_event(log, logging.INFO, "log_time", now=now)
    return now


def heartbeat() -> bool:
    """Shows the schedule is alive, and how to write with a fencing token:
    ``{prefix}:heartbeat`` only ever moves forward, even if a paused
    ex-leader's heartbeat arrives after the new leader's."""
    run = current_run()
    now = time.time()
    written = fenced_set(run.connection, f"{run.prefix}:heartbeat", f"{now:.3f} {run.site} token={run.token}",
                         run.token, prefix=run.prefix)
    log_event(log, logging.INFO, "heartbeat", site=run.site, token=run.token, written=written)
    return written
