"""What a schedule entry is, checked when the schedule is loaded.

An entry is declared once, in the schedule module users edit::

    Entry("log-time", "workers.jobs:log_time", cron="*/10 * * * *")
    Entry("heartbeat", "workers.jobs:heartbeat", every=15)

Bad input (a bad cron string, both or neither of cron/every, an unknown
function, a bad or duplicate name) raises ScheduleError with one line that
names the entry and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Callable, Optional, Union

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .imports import import_module

# RQ job ids allow only letters, digits, '_' and '-', and tick ids are built
# from entry names.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# What to do with ticks that fell due while no site led (crash failover):
CATCH_UP = "catch_up"  # run each missed tick that is still within the grace window
LATEST = "latest"      # run once for all of them (coalesced) — the default
SKIP = "skip"          # run none; wait for the next tick
MISSED_POLICIES = (CATCH_UP, LATEST, SKIP)

# What to do if the site loses the lease while the job runs:
FINISH = "finish"  # let it finish (its fenced writes are still rejected if stale)
STOP = "stop"      # stop the job at once
LOST_LEASE_POLICIES = (FINISH, STOP)

# What to do with a run that a shutdown interrupted (it outlived
# BATON_SHUTDOWN_GRACE, or its site's master died):
DROP = "drop"    # recorded as interrupted and not run again: at most once — the default
RERUN = "rerun"  # put back first in its queue: the next leader runs the tick again
                 # if it is still within its grace window (the job must be idempotent)
INTERRUPT_POLICIES = (DROP, RERUN)

# What a tick does when the previous run of the same entry is still running
# (Temporal's ScheduleOverlapPolicy / Kubernetes' concurrencyPolicy):
OVERLAP_SKIP = "skip"              # the tick does not run; recorded as skipped, reason overlap —
                                   # Temporal SKIP, Kubernetes Forbid (the default of both... and of Baton)
OVERLAP_BUFFER_ONE = "buffer_one"  # the tick waits for the running one and starts when it ends (if still
                                   # within its grace); a third while one waits is skipped — Temporal BUFFER_ONE
OVERLAP_ALLOW = "allow"            # runs beside it (each on its own worker) — Temporal ALLOW_ALL, Kubernetes Allow
OVERLAP_POLICIES = (OVERLAP_SKIP, OVERLAP_BUFFER_ONE, OVERLAP_ALLOW)

# Failed runs (the function raised) are retried this many times at most...
MAX_RETRIES = 10
# ...after a delay that starts at the entry's retry_backoff and doubles per
# attempt, up to this.
MAX_RETRY_DELAY_S = 3600.0


def retry_delay(backoff: float, attempt: int) -> float:
    """Seconds between the failure of ``attempt`` (0 = the first run) and the next try."""
    return min(MAX_RETRY_DELAY_S, backoff * 2 ** attempt)


def rq_queue_name(prefix: str, queue: str) -> str:
    """The RQ queue an entry's ticks go to. Prefixed, so that two deployments
    sharing one Redis never take each other's jobs."""
    return f"{prefix}-{queue}"


class ScheduleError(ValueError):
    """A schedule mistake, as one line naming the entry and the fix."""


@dataclass(frozen=True)
class Entry:
    name: str
    func: Union[str, Callable]  # "package.module:function" or the function itself
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    cron: Optional[str] = None  # five-field cron, read in ``timezone`` (default BATON_TIMEZONE)
    every: Optional[float] = None  # a fixed interval in seconds
    queue: str = "baton"
    timeout: int = 180  # seconds a run may take before RQ stops it
    missed: str = LATEST
    # How late a tick may still start. None: one period (the interval, or the
    # gap to the next cron time) — a late tick is worth running until the
    # next one is due; for missed='catch_up' at least an hour
    # (ticks.CATCH_UP_DEFAULT_GRACE_S), or catching up would stop at one tick.
    grace: Optional[float] = None
    on_lost_lease: str = FINISH
    on_interrupt: str = DROP
    overlap: str = OVERLAP_SKIP
    # IANA zone the cron fields are read in; None: BATON_TIMEZONE.
    timezone: Optional[str] = None
    retries: int = 0  # failed runs retried this many times (the same tick, each attempt claimed once)
    retry_backoff: float = 10.0  # seconds before the first retry; doubles per attempt (max MAX_RETRY_DELAY_S)
    # A Healthchecks.io-style URL pinged at each run's start, success and failure (pings.py).
    ping_url: Optional[str] = None

    def check(self) -> "Entry":
        """Validate; returns the entry with ``func`` resolved to a callable."""
        where = f"schedule entry {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ScheduleError(f"{where}: name must be 1-64 letters, digits, '_' or '-'")
        if (self.cron is None) == (self.every is None):
            raise ScheduleError(f"{where}: give exactly one of cron='*/10 * * * *' or every=<seconds>")
        if self.cron is not None:
            if not isinstance(self.cron, str) or len(self.cron.split()) != 5 or not croniter.is_valid(self.cron):
                raise ScheduleError(
                    f"{where}: cron {self.cron!r} is not a 5-field cron expression "
                    "(minute hour day-of-month month day-of-week), e.g. '*/10 * * * *'"
                )
        if self.every is not None:
            if isinstance(self.every, bool) or not isinstance(self.every, (int, float)) or self.every < 1:
                raise ScheduleError(f"{where}: every must be a number of seconds >= 1, got {self.every!r}")
        if self.missed not in MISSED_POLICIES:
            raise ScheduleError(f"{where}: missed must be one of {', '.join(MISSED_POLICIES)}, got {self.missed!r}")
        if self.on_lost_lease not in LOST_LEASE_POLICIES:
            raise ScheduleError(
                f"{where}: on_lost_lease must be one of {', '.join(LOST_LEASE_POLICIES)}, got {self.on_lost_lease!r}"
            )
        if self.on_interrupt not in INTERRUPT_POLICIES:
            raise ScheduleError(
                f"{where}: on_interrupt must be one of {', '.join(INTERRUPT_POLICIES)}, got {self.on_interrupt!r}"
            )
        if self.overlap not in OVERLAP_POLICIES:
            raise ScheduleError(f"{where}: overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {self.overlap!r}")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError, TypeError):
                raise ScheduleError(
                    f"{where}: timezone must be an IANA zone name like 'Europe/Berlin' (or None for "
                    f"BATON_TIMEZONE), got {self.timezone!r}") from None
            if self.every is not None:
                raise ScheduleError(f"{where}: timezone applies to cron entries only (every= counts seconds)")
        if (not isinstance(self.retries, int) or isinstance(self.retries, bool)
                or not 0 <= self.retries <= MAX_RETRIES):
            raise ScheduleError(f"{where}: retries must be a whole number from 0 to {MAX_RETRIES}, got {self.retries!r}")
        if (isinstance(self.retry_backoff, bool) or not isinstance(self.retry_backoff, (int, float))
                or not 1 <= self.retry_backoff <= MAX_RETRY_DELAY_S):
            raise ScheduleError(
                f"{where}: retry_backoff must be seconds from 1 to {MAX_RETRY_DELAY_S:g}, got {self.retry_backoff!r}")
        if self.ping_url is not None and (not isinstance(self.ping_url, str)
                                          or not re.match(r"^https?://[^/\s]+", self.ping_url)):
            raise ScheduleError(f"{where}: ping_url must be an http:// or https:// URL (or None)")
        if not isinstance(self.timeout, int) or isinstance(self.timeout, bool) or self.timeout < 1:
            raise ScheduleError(f"{where}: timeout must be whole seconds >= 1, got {self.timeout!r}")
        if self.grace is not None and (not isinstance(self.grace, (int, float)) or self.grace <= 0):
            raise ScheduleError(f"{where}: grace must be seconds > 0 (or None for one period; an hour at least for catch_up), got {self.grace!r}")
        if not isinstance(self.queue, str) or not _NAME.match(self.queue):
            raise ScheduleError(f"{where}: queue must be 1-64 letters, digits, '_' or '-'")
        if not isinstance(self.args, (tuple, list)) or not isinstance(self.kwargs, dict):
            raise ScheduleError(f"{where}: args must be a tuple and kwargs a dict")
        stable_form([list(self.args), self.kwargs], where)  # raises for a value with no stable form
        return _replace_func(self, resolve(self.func, where))

    def zone(self, default: tzinfo) -> tzinfo:
        """The zone this entry's cron fields are read in."""
        return ZoneInfo(self.timezone) if self.timezone else default

    @property
    def func_path(self) -> str:
        return self.func if isinstance(self.func, str) else f"{self.func.__module__}:{self.func.__qualname__}"


def stable_form(value, where: str = "schedule"):
    """``value`` as plain JSON data that is the same in every process, for
    the entry's definition hash (store.py): sets are sorted (a set of
    strings iterates in a different order in each process: PYTHONHASHSEED),
    dict keys are sorted, tuples become lists. A value whose repr differs
    per process (``<object at 0x...>``) is refused: its entry would be
    rewritten at every election, resetting its next run."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [stable_form(item, where) for item in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):  # as JSON writes it (sorted there): older hashes still match
            return {k: stable_form(v, where) for k, v in value.items()}
        pairs = [[stable_form(k, where), stable_form(v, where)] for k, v in value.items()]
        return {"dict": sorted(pairs, key=_sort_key)}
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((stable_form(item, where) for item in value), key=_sort_key)}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    text = repr(value)
    if " at 0x" in text or " object at " in text:
        raise ScheduleError(f"{where}: args and kwargs must be plain data (str, numbers, lists, dicts, sets, "
                            f"dates...); {text} looks different in every process")
    return {"repr": f"{type(value).__module__}.{type(value).__qualname__}:{text}"}


def _sort_key(item) -> str:
    return json.dumps(item, sort_keys=True)


def _replace_func(entry: Entry, func: Callable) -> Entry:
    from dataclasses import replace

    return replace(entry, func=func, args=tuple(entry.args))


def resolve(func: Union[str, Callable], where: str) -> Callable:
    if callable(func):
        if "<" in getattr(func, "__qualname__", "<"):
            raise ScheduleError(f"{where}: func must be a module-level function (RQ imports it by name)")
        return func
    if not isinstance(func, str) or ":" not in func:
        raise ScheduleError(f"{where}: func must be 'package.module:function', got {func!r}")
    module_name, _, attr = func.partition(":")
    try:
        module = import_module(module_name, f"{where}: func {func!r}")
    except ImportError as exc:
        raise ScheduleError(str(exc)) from None
    target = getattr(module, attr, None)
    if not callable(target):
        raise ScheduleError(f"{where}: module {module_name!r} has no function {attr!r}")
    return target


def check_schedule(entries) -> list:
    """Validate a whole schedule: every entry, and names unique."""
    checked, seen = [], set()
    for entry in entries:
        if not isinstance(entry, Entry):
            raise ScheduleError(f"schedule: every item must be an Entry(...), got {entry!r}")
        entry = entry.check()
        if entry.name in seen:
            raise ScheduleError(f"schedule entry {entry.name!r}: the name is used twice; names must be unique")
        seen.add(entry.name)
        checked.append(entry)
    return checked
