"""What a running tick can know about itself: ``current_run()``."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Optional

_current: contextvars.ContextVar = contextvars.ContextVar("baton_run", default=None)


@dataclass(frozen=True)
class RunContext:
    entry: str
    tick: float  # scheduled time, seconds since the epoch
    site: str
    token: int  # the fencing token of the term the job runs under
    prefix: str
    connection: object  # the job's redis.Redis


def current_run() -> Optional[RunContext]:
    """The tick being run in this process, or None outside a Baton job."""
    return _current.get()


def set_current_run(context: Optional[RunContext]):
    return _current.set(context)


def reset_current_run(token) -> None:
    _current.reset(token)
