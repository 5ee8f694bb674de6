"""When an entry's ticks fall, and which of them to run after a gap.

A tick is (entry, scheduled time). Times are seconds since the epoch. Next
times always advance from the *scheduled* time, never from "now", so a late
run never shifts the ones after it (no drift):

- cron entries are read in the entry's own ``timezone``, else the configured
  zone (BATON_TIMEZONE), whatever the host's TZ is; at a daylight-saving
  change a repeated wall time runs once (its first occurrence) and a skipped
  one once (at the change) — the rule is in cron_clock;
- interval entries fall on multiples of the interval since the epoch, so every
  site and every restart agrees on them without storing an anchor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import tzinfo
from itertools import islice, takewhile
from typing import List, Optional

from . import cron_clock
from .entries import CATCH_UP, LATEST, SKIP, Entry

# A tick this late or less counts as on time (not missed): the normal wake-up
# jitter of the scheduler and a quick graceful handoff stay well inside it.
ON_TIME_WINDOW = 1.0

# catch_up never enqueues more than this many missed ticks of one entry at
# once (a 1 s entry after an hour-long outage would otherwise flood the queue).
MAX_CATCH_UP = 100

# A catch_up entry without a grace may still run a tick this late. One period
# (every other policy's default) would leave catch_up with the newest tick or
# two — no different from latest. An hour of missed ticks is what a failover
# plausibly leaves behind, and MAX_CATCH_UP bounds how many of them run; set
# grace for a longer (or shorter) window.
CATCH_UP_DEFAULT_GRACE_S = 3600.0


def next_tick(entry: Entry, after: float, zone: tzinfo) -> float:
    """The first tick strictly after ``after`` (``zone``: the default zone)."""
    if entry.every is not None:
        return (math.floor(after / entry.every) + 1) * entry.every
    return cron_clock.next_after(entry.cron, after, entry.zone(zone))


def grace_for(entry: Entry, period: float) -> float:
    """How late a tick may still start, given the gap to the tick after it:
    the entry's grace; else one period, at least an hour for catch_up."""
    if entry.grace is not None:
        return float(entry.grace)
    if entry.missed == CATCH_UP:
        return max(period, CATCH_UP_DEFAULT_GRACE_S)
    return period


def grace_of(entry: Entry, tick: float, zone: tzinfo) -> float:
    """How late ``tick`` may still start (see grace_for)."""
    if entry.grace is not None:
        return float(entry.grace)
    return grace_for(entry, next_tick(entry, tick, zone) - tick)


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
    return cron_clock.latest_at_or_before(entry.cron, now, entry.zone(zone))


def _recent_ticks(entry: Entry, scheduled: float, now: float, zone: tzinfo, limit: int) -> List[float]:
    """Up to ``limit`` of the newest ticks in [scheduled, now], oldest first —
    walked back from now, so the cost never depends on how old the slot is."""
    if entry.every is not None:
        newest = _latest_at_or_before(entry, now, zone)
        if newest < scheduled:
            return []
        oldest = max(scheduled, newest - (limit - 1) * entry.every)
        count = int(round((newest - oldest) / entry.every)) + 1
        return [oldest + i * entry.every for i in range(count)]
    walk = cron_clock.ticks_at_or_before(entry.cron, now, entry.zone(zone))
    ticks = list(islice(takewhile(lambda tick: tick >= scheduled, walk), limit))
    return ticks[::-1]


def _count_from(entry: Entry, scheduled: float, before: float, zone: tzinfo) -> tuple:
    """(number of ticks in [scheduled, before), exact?), counting at most MAX_COUNTED."""
    if entry.every is not None:
        return max(0, int(round((before - scheduled) / entry.every))), True
    later = cron_clock.ticks_after(entry.cron, scheduled, entry.zone(zone))
    count, tick = 0, scheduled
    while tick < before:
        if count == MAX_COUNTED:
            return count, False
        count += 1
        tick = next(later)
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
    # A tick's period is the gap to the tick after it.
    graces = [grace_for(entry, after - tick) for tick, after in zip(recent, recent[1:] + [following])]
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
