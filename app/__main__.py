"""``python -m app check [--redis]`` — Heroku's release phase.

Validates the whole configuration (every variable the web, worker and
release processes read) and the schedule; with ``--redis`` (the Procfile's
release command) it also connects to Redis and reports what it finds
(app/redis_check.py). Exit 0, or print one line and exit 2 — so a release
that would crash or stall a dyno is refused before any dyno restarts.
"""

from __future__ import annotations

import sys

from election.logfmt import format_fields
from workers.entries import ScheduleError
from workers.loader import load_schedule
from workers.settings import ConfigError

from .redis_check import RedisCheckFailed, check_redis
from .settings import WebSettings

USAGE = "usage: python -m app check [--redis]"


def main(argv) -> int:
    if not argv or argv[0] != "check" or any(a != "--redis" for a in argv[1:]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = WebSettings.from_env()
        entries = load_schedule(settings.core.schedule_module)
        report = check_redis(settings.core) if "--redis" in argv else None
    except (ConfigError, ScheduleError, RedisCheckFailed) as exc:
        print(f"baton: {exc}", file=sys.stderr)
        return 2
    core = settings.core
    print(format_fields({"at": "info", "event": "config_ok", "site": core.identity.site, "entries": len(entries),
                         "timezone": core.timezone.key, "embedded_worker": settings.embedded_worker,
                         "shutdown_grace_s": core.shutdown_grace}))
    if report is not None:
        print(format_fields({"at": "info", "event": "redis_ok", **report["facts"]}))
        for warning in report["warnings"]:
            print(format_fields({"at": "warn", "event": "redis_warning", "problem": warning}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
