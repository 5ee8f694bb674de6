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
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import List, Optional

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


@dataclass(frozen=True)
class Skipped:
    """The ticks a plan does not run: how many, the first and the last.
    ``exact`` is False when a cron slot was so old that counting stopped at
    ``MAX_COUNTED`` (the count is then a lower bound)."""

    count: int = 0
    first: Optional[float] = None
    last: Optional[float] = None
    exact: bool = True

    def __bool__(self) -> bool:
        return self.count > 0


# How many missed cron ticks a plan counts one by one for its log line before
# it stops and says "at least": counting a per-minute slot left months behind
# would otherwise cost seconds of CPU.
MAX_COUNTED = 1000


def _latest_at_or_before(entry: Entry, now: float, zone: tzinfo) -> float:
    """The newest tick <= now."""
    if entry.every is not None:
        return math.floor(now / entry.every) * entry.every
    # Cron ticks fall on whole seconds: the newest one before floor(now) + 1 is <= now.
    start = datetime.fromtimestamp(math.floor(now) + 1, zone)
    return croniter(entry.cron, start).get_prev(float)


def _recent_ticks(entry: Entry, scheduled: float, now: float, zone: tzinfo, limit: int) -> List[float]:
    """Up to ``limit`` of the newest ticks in [scheduled, now], oldest first —
    walked back from now, so the cost never depends on how old the slot is."""
    newest = _latest_at_or_before(entry, now, zone)
    if newest < scheduled:
        return []
    if entry.every is not None:
        oldest = max(scheduled, newest - (limit - 1) * entry.every)
        count = int(round((newest - oldest) / entry.every)) + 1
        return [oldest + i * entry.every for i in range(count)]
    walk = croniter(entry.cron, datetime.fromtimestamp(newest, zone))
    ticks = [newest]
    while len(ticks) < limit:
        earlier = walk.get_prev(float)
        if earlier < scheduled:
            break
        ticks.append(earlier)
    return ticks[::-1]


def _count_from(entry: Entry, scheduled: float, before: float, zone: tzinfo) -> tuple:
    """(number of ticks in [scheduled, before), exact?), counting at most MAX_COUNTED."""
    if entry.every is not None:
        return max(0, int(round((before - scheduled) / entry.every))), True
    count, tick = 0, scheduled
    while tick < before:
        if count == MAX_COUNTED:
            return count, False
        count += 1
        tick = next_tick(entry, tick, zone)
    return count, True


def plan(entry: Entry, scheduled: float, now: float, zone: tzinfo):
    """Decide, for a schedule slot due at ``scheduled``, what to run now.

    Returns ``(run, skipped, next_time)``: the ticks to enqueue (oldest
    first), a :class:`Skipped` summary of the ticks dropped (too late, or by
    policy), and the next scheduled time (> now). Only the newest
    ``MAX_CATCH_UP`` ticks are ever looked at one by one.
    """
    if scheduled > now:
        return [], Skipped(), scheduled
    following = next_tick(entry, now, zone)
    recent = _recent_ticks(entry, scheduled, now, zone, MAX_CATCH_UP)
    # A tick's default grace is the gap to the tick after it.
    graces = [entry.grace if entry.grace is not None else after - tick
              for tick, after in zip(recent, recent[1:] + [following])]
    live = [tick for tick, grace in zip(recent, graces) if now - tick <= grace]
    if entry.missed == CATCH_UP:
        run = live
    elif entry.missed == LATEST:
        run = live[-1:]
    elif entry.missed == SKIP:
        run = [t for t in live[-1:] if now - t <= ON_TIME_WINDOW]
    else:  # validated at load
        raise ValueError(entry.missed)
    not_run = [t for t in recent if t not in run]
    older, exact = _count_from(entry, scheduled, recent[0], zone) if recent else (0, True)
    count = older + len(not_run)
    if count == 0:
        return run, Skipped(), following
    first = scheduled if older else not_run[0]
    return run, Skipped(count, first, not_run[-1] if not_run else None, exact), following


def tick_id(entry: Entry, tick: float) -> str:
    """The RQ job id of a tick: letters, digits, '_' and '-' only."""
    return f"{entry.name}-{round(tick * 1000)}"
