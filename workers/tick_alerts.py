"""The alerts of one entry's ticks (alerts.py): failing, not running, and
back to normal.

- ``failing:<entry>`` opens at a failed run (the error's type and message,
  the attempt, whether a retry follows) and closes at the entry's next
  successful run;
- ``not_run:<entry>:<reason>`` opens when a tick does not run for
  ``reason`` (no_leader, coalesced, missed_skip, overlap, late_start,
  not_started; a pause is an operator's choice and raises nothing) and
  closes at the entry's next successful run.

Called only where alerts are configured (the caller checks), so a site
without a webhook pays nothing.
"""

from __future__ import annotations

import time

from redis.exceptions import RedisError

from .alerts import Alert, open_conditions, raise_alert

# Reasons that raise no alert: the operator chose them.
QUIET_REASONS = ("paused",)


def entry_failed(connection, prefix: str, entry: str, *, tick: float, site, token, error: str, attempt: int,
                 retry_follows: bool) -> None:
    first_line = (error or "").split("\n", 1)[0]
    error_type, _, message = first_line.partition(": ")
    raise_alert(connection, prefix, Alert(
        "run_failed", f"failing:{entry}", f"{entry} failed on site {site}: {first_line}",
        {"entry": entry, "tick": tick, "site": site, "token": token, "error_type": error_type,
         "error_message": message, "attempt": attempt, "retry_follows": retry_follows, "at": time.time()}))


def entry_not_run(connection, prefix: str, entry: str, *, reason: str, tick: float, count: int = 1,
                  site=None) -> None:
    if reason in QUIET_REASONS:
        return
    raise_alert(connection, prefix, Alert(
        "tick_not_run", f"not_run:{entry}:{reason}",
        f"{count} tick{'s' if count != 1 else ''} of {entry} did not run: {reason}",
        {"entry": entry, "reason": reason, "tick": tick, "count": count, "site": site, "at": time.time()}))


def entry_succeeded(connection, prefix: str, entry: str, *, tick: float, site, token) -> None:
    """Close the entry's failing and not-run conditions, if open."""
    try:
        opened = [key for key in open_conditions(connection, prefix)
                  if key == f"failing:{entry}" or key.startswith(f"not_run:{entry}:")]
    except RedisError:
        return  # the next successful run closes them
    for key in opened:
        raise_alert(connection, prefix, Alert(
            "run_failed" if key.startswith("failing:") else "tick_not_run", key,
            f"{entry} ran again on site {site}: recovered from {key.split(':', 1)[0].replace('_', ' ')}",
            {"entry": entry, "tick": tick, "site": site, "token": token, "at": time.time()}, recovered=True))
