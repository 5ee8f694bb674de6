"""Loads the schedule module named by BATON_SCHEDULE and validates it."""

from __future__ import annotations

import importlib

from .entries import ScheduleError, check_schedule


def load_schedule(module_name: str) -> list:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScheduleError(f"BATON_SCHEDULE: cannot import {module_name!r} ({exc})") from None
    entries = getattr(module, "SCHEDULE", None)
    if not isinstance(entries, (list, tuple)):
        raise ScheduleError(f"BATON_SCHEDULE: module {module_name!r} must define SCHEDULE = [Entry(...), ...]")
    return check_schedule(entries)
