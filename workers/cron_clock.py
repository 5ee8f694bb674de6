"""Cron times as instants, with one rule for daylight-saving changes.

Cron fields name wall-clock times in a zone, and twice a year a zone's wall
clock repeats an hour or skips one. Baton's rule:

- fall-back: a wall time that occurs twice runs ONCE, at its first
  occurrence (fold=0). Hourly ``0 * * * *`` in Europe/Berlin on 2026-10-25
  runs at 01:00 CEST, 02:00 CEST, then 03:00 CET — not at the second 02:00.
- spring-forward: a wall time that does not exist runs ONCE, at the first
  valid instant after it (the transition instant). ``30 2 * * *`` in
  Europe/Berlin on 2026-03-29 runs at 03:00 CEST (01:00 UTC). Several missing
  wall times that map to that instant (``*/15 * * * *`` at 02:00, 02:15,
  02:30, 02:45, and 03:00 itself) run once, at it.

So a tick is never run twice and never dropped, and :func:`instant` (a wall
time's run instant under the rule) never decreases as the wall time grows.
That is why croniter only ever sees NAIVE wall times here (its own zone-aware
arithmetic runs a repeated wall time twice): walking wall times forward or
back and mapping each through :func:`instant` walks the run instants in the
same order, and only a repeated hour or a gap needs candidates skipped or
merged. Elsewhere a step costs one croniter step.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Iterator, Optional

from croniter import croniter

_UTC = timezone.utc

# How far ahead next_transition looks, and how finely: a year and a bit, so
# that a zone with DST always shows its next change, sampled daily (no zone
# changes its offset twice within a day).
TRANSITION_HORIZON_DAYS = 400
_SAMPLE_STEP_S = 86400


def wall_of(t: float, zone: tzinfo) -> datetime:
    """The naive wall-clock time in ``zone`` at epoch seconds ``t``."""
    return datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def _offset(t: float, zone: tzinfo) -> timedelta:
    return datetime.fromtimestamp(t, zone).utcoffset()


def _first_instant_with_offset_of(lo: int, hi: int, zone: tzinfo) -> float:
    """The first whole second in (lo, hi] whose UTC offset is hi's, given one
    offset change in between (tz transitions fall on whole seconds)."""
    target = _offset(hi, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, zone) == target:
            hi = mid
        else:
            lo = mid
    return float(hi)


def instant(wall: datetime, zone: tzinfo) -> float:
    """Epoch seconds at which the naive ``wall`` time in ``zone`` runs: its
    first occurrence if it exists, else the transition that skipped it."""
    first = wall.replace(tzinfo=zone, fold=0)
    if wall_of(first.timestamp(), zone) == wall.replace(fold=0):
        return first.timestamp()
    # In a gap the two folds read the wall time with the offsets before and
    # after the change, so they bracket the transition instant.
    lo, hi = sorted((first.timestamp(), wall.replace(tzinfo=zone, fold=1).timestamp()))
    return _first_instant_with_offset_of(math.floor(lo), math.ceil(hi), zone)


def ticks_after(expr: str, t: float, zone: tzinfo) -> Iterator[float]:
    """The run instants of ``expr`` strictly after ``t``, ascending, each once."""
    # A wall time at or before t's own wall time runs at or before t (instant
    # never decreases), so starting from it misses nothing.
    walk = croniter(expr, wall_of(t, zone))
    last = t
    while True:
        at = instant(walk.get_next(datetime), zone)
        if at > last:  # skips the rest of a repeated hour, merges a gap
            last = at
            yield at


def ticks_at_or_before(expr: str, t: float, zone: tzinfo) -> Iterator[float]:
    """The run instants of ``expr`` at or before ``t``, newest first, each once."""
    # croniter's get_prev is strict and cron times are whole seconds, so the
    # walk starts at the wall time of the next whole second. Inside the second
    # pass of a repeated hour, later wall times of the first pass ran before t:
    # start from a wall time that runs after t, so none is missed.
    start = wall_of(math.floor(t) + 1, zone)
    while instant(start, zone) <= t:
        start += timedelta(hours=1)
    walk = croniter(expr, start)
    last = math.inf
    while True:
        at = instant(walk.get_prev(datetime), zone)
        if at <= t and at < last:  # skips runs after t, merges a gap
            last = at
            yield at


def next_after(expr: str, t: float, zone: tzinfo) -> float:
    """The first run instant of ``expr`` strictly after ``t``."""
    return next(ticks_after(expr, t, zone))


def latest_at_or_before(expr: str, t: float, zone: tzinfo) -> float:
    """The newest run instant of ``expr`` at or before ``t``."""
    return next(ticks_at_or_before(expr, t, zone))


def next_transition(zone: tzinfo, after: float) -> Optional[float]:
    """The first instant after ``after`` at which ``zone``'s UTC offset
    changes, within TRANSITION_HORIZON_DAYS; None if it does not."""
    lo = math.floor(after)
    start = _offset(lo, zone)
    for _ in range(TRANSITION_HORIZON_DAYS):
        hi = lo + _SAMPLE_STEP_S
        if _offset(hi, zone) != start:
            return _first_instant_with_offset_of(lo, hi, zone)
        lo = hi
    return None
