"""``python -m app check [--redis]`` — Heroku's release phase.

Validates the whole configuration (every variable the web, worker and
release processes read) and the schedule; with ``--redis`` (the Procfile's
release command) it also connects to Redis and reports what it finds
(app/redis_check.py). Exit 0, or print one line and exit 2 — so a release
that would crash or stall a dyno is refused before any dyno restarts.

It also previews the schedule, so a deploy log shows when each entry runs
next (``next_runs``) and, for cron entries, what the next daylight-saving
change does to them (``dst_runs``: the runs either side of it).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone, tzinfo
from itertools import islice

from croniter import CroniterBadDateError

from election.logfmt import format_fields
from workers import cron_clock
from workers.entries import ScheduleError
from workers.loader import load_schedule
from workers.settings import ConfigError
from workers.ticks import next_tick

from .redis_check import RedisCheckFailed, check_redis
from .settings import WebSettings

USAGE = "usage: python -m app check [--redis]"

NEXT_RUNS = 3  # runs previewed per entry
RUNS_EACH_SIDE_OF_TRANSITION = 2  # enough to see a repeated or skipped wall time handled


def iso(t: float, zone: tzinfo) -> str:
    """``t`` as ISO 8601 in ``zone`` with its offset (``Z`` for UTC)."""
    text = datetime.fromtimestamp(t, zone).isoformat()
    return text[:-len("+00:00")] + "Z" if zone is timezone.utc else text


def schedule_preview(entries, default_zone: tzinfo, now: float) -> list:
    """The logfmt field dicts of each entry's next runs after ``now`` and, for
    a cron entry whose zone changes offset within a year, its runs around
    that change."""
    lines = []
    for entry in entries:
        try:
            lines += _entry_preview(entry, default_zone, now)
        except CroniterBadDateError:  # croniter accepts the expression but finds no date for it
            raise ScheduleError(f"schedule entry {entry.name!r}: cron {entry.cron!r} matches no date "
                                "(like 31 February); fix its day and month fields") from None
    return lines


def _entry_preview(entry, default_zone: tzinfo, now: float) -> list:
    zone = timezone.utc if entry.every is not None else entry.zone(default_zone)
    zone_name = "UTC" if zone is timezone.utc else getattr(zone, "key", str(zone))
    runs, tick = [], now
    for _ in range(NEXT_RUNS):
        tick = next_tick(entry, tick, default_zone)
        runs.append(tick)
    lines = [{"at": "info", "event": "next_runs", "entry": entry.name, "zone": zone_name,
              "runs": ",".join(iso(t, zone) for t in runs)}]
    transition = cron_clock.next_transition(zone, now) if entry.cron is not None else None
    if transition is not None:
        # Transitions and cron runs fall on whole seconds: the runs before the
        # change are those at or before the second before it.
        before = islice(cron_clock.ticks_at_or_before(entry.cron, transition - 1, zone), RUNS_EACH_SIDE_OF_TRANSITION)
        after = islice(cron_clock.ticks_after(entry.cron, transition - 1, zone), RUNS_EACH_SIDE_OF_TRANSITION)
        lines.append({"at": "info", "event": "dst_runs", "entry": entry.name, "zone": zone_name,
                      "transition": iso(transition, timezone.utc),
                      "runs": ",".join(iso(t, zone) for t in sorted(before) + list(after))})
    return lines


def main(argv) -> int:
    if not argv or argv[0] != "check" or any(a != "--redis" for a in argv[1:]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = WebSettings.from_env()
        entries = load_schedule(settings.core.schedule_module)
        preview = schedule_preview(entries, settings.core.timezone, time.time())
        report = check_redis(settings.core) if "--redis" in argv else None
    except (ConfigError, ScheduleError, RedisCheckFailed) as exc:
        print(f"baton: {exc}", file=sys.stderr)
        return 2
    core = settings.core
    print(format_fields({"at": "info", "event": "config_ok", "site": core.identity.site, "entries": len(entries),
                         "timezone": core.timezone.key, "embedded_worker": settings.embedded_worker,
                         "worker_concurrency": core.worker_concurrency,
                         "shutdown_grace_s": core.shutdown_grace}))
    for fields in preview:
        print(format_fields(fields))
    if report is not None:
        print(format_fields({"at": "info", "event": "redis_ok", **report["facts"]}))
        for warning in report["warnings"]:
            print(format_fields({"at": "warn", "event": "redis_warning", "problem": warning}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
