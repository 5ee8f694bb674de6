"""``python -m app check`` — Heroku's release phase: validate the whole
configuration and the schedule, exit 0, or print one line and exit 2 so the
release is refused before any dyno restarts into a crash loop."""

from __future__ import annotations

import sys

from workers.entries import ScheduleError
from workers.loader import load_schedule
from workers.settings import ConfigError

from .settings import WebSettings


def main(argv) -> int:
    if argv[:1] != ["check"]:
        print("usage: python -m app check", file=sys.stderr)
        return 2
    try:
        settings = WebSettings.from_env()
        entries = load_schedule(settings.core.schedule_module)
    except (ConfigError, ScheduleError) as exc:
        print(f"baton: {exc}", file=sys.stderr)
        return 2
    print(f"at=info event=config_ok site={settings.core.identity.site} entries={len(entries)} "
          f"timezone={settings.core.timezone.key} embedded_worker={settings.embedded_worker}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
