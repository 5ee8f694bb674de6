"""Loads the schedule module named by BATON_SCHEDULE and validates it."""

from __future__ import annotations

from .entries import ScheduleError, check_schedule
from .imports import import_module


def load_schedule(module_name: str) -> list:
    try:
        module = import_module(module_name, "BATON_SCHEDULE")
    except ImportError as exc:
        raise ScheduleError(str(exc)) from None
    entries = getattr(module, "SCHEDULE", None)
    if not isinstance(entries, (list, tuple)):
        raise ScheduleError(f"BATON_SCHEDULE: module {module_name!r} must define SCHEDULE = [Entry(...), ...]")
    return check_schedule(entries)
