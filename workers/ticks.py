"""When an entry's ticks fall, and which of them to run after a gap.

A tick is (entry, scheduled time). Times are seconds since the epoch. Next
times always advance from the *scheduled* time, never from "now", so a late
run never shifts the ones after it (no drift):

- cron entries are evaluated in the configured zone (BATON_TIMEZONE), with
  zone-aware datetimes, whatever the host's TZ is;
- interval entries fall on multiples of the interval since the epoch, so every
  site and every restart agrees on them without storing an anchor.
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from typing import List

from croniter import croniter

from .entries import CATCH_UP, LATEST, SKIP, Entry

# A tick this late or less counts as on time (not missed): the normal wake-up
# jitter of the scheduler and a quick graceful handoff stay well inside it.
ON_TIME_WINDOW = 1.0

# catch_up never enqueues more than this many missed ticks of one entry at
# once (a 1 s entry after an hour-long outage would otherwise flood the queue).
MAX_CATCH_UP = 100


def next_tick(entry: Entry, after: float, zone: tzinfo) -> float:
    """The first tick strictly after ``after``."""
    if entry.every is not None:
        return (math.floor(after / entry.every) + 1) * entry.every
    start = datetime.fromtimestamp(after, zone)
    return croniter(entry.cron, start).get_next(float)


def grace_of(entry: Entry, tick: float, zone: tzinfo) -> float:
    """How late ``tick`` may still start: the entry's grace, or one period."""
    if entry.grace is not None:
        return float(entry.grace)
    return next_tick(entry, tick, zone) - tick


def due_ticks(entry: Entry, scheduled: float, now: float, zone: tzinfo) -> List[float]:
    """Every tick from ``scheduled`` up to ``now`` (bounded)."""
    ticks, tick = [], scheduled
    while tick <= now and len(ticks) < 100_000:
        ticks.append(tick)
        tick = next_tick(entry, tick, zone)
    return ticks


def plan(entry: Entry, scheduled: float, now: float, zone: tzinfo):
    """Decide, for a schedule slot due at ``scheduled``, what to run now.

    Returns ``(run, skipped, next_time)``: the ticks to enqueue, the ticks
    dropped (too late, or by policy), and the next scheduled time (> now).
    """
    ticks = due_ticks(entry, scheduled, now, zone)
    if not ticks:
        return [], [], scheduled
    following = next_tick(entry, ticks[-1], zone)
    while following <= now:  # due_ticks was bounded
        following = next_tick(entry, following, zone)
    live = [t for t in ticks if now - t <= grace_of(entry, t, zone)]
    if entry.missed == CATCH_UP:
        run = live[-MAX_CATCH_UP:]
    elif entry.missed == LATEST:
        run = live[-1:]
    elif entry.missed == SKIP:
        run = [t for t in live[-1:] if now - t <= ON_TIME_WINDOW]
    else:  # validated at load
        raise ValueError(entry.missed)
    skipped = [t for t in ticks if t not in run]
    return run, skipped, following


def tick_id(entry: Entry, tick: float) -> str:
    """The RQ job id of a tick: letters, digits, '_' and '-' only."""
    return f"{entry.name}-{round(tick * 1000)}"
