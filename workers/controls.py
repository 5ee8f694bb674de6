"""An operator's controls over one entry: pause, resume, run now, history.

Everything is in Redis, so it holds across failover and restarts and any
site (or a one-off dyno) can act:

- **pause** writes ``{prefix}:paused`` (hash: entry -> JSON with who, when
  and a note). While paused, the leader's scheduler still plans the entry's
  ticks and advances its slot, but records each tick as ``skipped`` with
  reason ``paused`` instead of enqueuing it; a tick already queued when the
  pause came is skipped by its fenced claim (claims.py). **resume** removes
  the field: the next tick runs; ticks that fell due while paused are not
  run afterwards (they were recorded as skipped);
- **run now** enqueues a manual tick (job id ``{prefix}-{entry}-m<ms>``) on
  the entry's queue, on whichever site asks: like every tick it runs only
  on the leading site's workers, under the fenced claim, and is recorded
  with ``manual`` (who asked). A pause does not hold it back (the operator
  asked for it); the entry's ``overlap`` policy does apply;
- **history** is the entry's tick log (runs.py).

A name that is not in the schedule is refused with :class:`UnknownEntry`.
"""

from __future__ import annotations

import json
import time

from election import Keys

from .batch import TickBatch
from .runs import json_hash, tick_history

# A pause note is kept to this many characters.
NOTE_MAX = 500


class UnknownEntry(LookupError):
    """The name is not an entry of this schedule."""


def _entry(entries, name: str):
    for entry in entries:
        if entry.name == name:
            return entry
    raise UnknownEntry(f"no entry named {name!r} in the schedule (entries: {', '.join(e.name for e in entries)})")


def paused(connection, prefix: str) -> dict:
    """{entry: {"by", "at", "note"}} of every paused entry."""
    return json_hash(connection, Keys(prefix).paused)


def pause(connection, prefix: str, entries, name: str, by: str, note: str = "") -> dict:
    _entry(entries, name)
    record = {"by": by, "at": time.time(), "note": (note or "")[:NOTE_MAX]}
    connection.hset(Keys(prefix).paused, name, json.dumps(record, sort_keys=True))
    return record


def resume(connection, prefix: str, entries, name: str) -> bool:
    """True if the entry was paused."""
    _entry(entries, name)
    return bool(connection.hdel(Keys(prefix).paused, name))


def run_now(raw_connection, prefix: str, entries, zone, name: str, by: str) -> str:
    """Enqueue a manual run of ``name``; returns its job id. ``raw_connection``
    without decode_responses (RQ's need)."""
    entry = _entry(entries, name)
    tick = time.time()
    batch = TickBatch(raw_connection, prefix, zone, token=None, manual_by=by).prepare([(entry, tick)])
    batch.execute()  # nothing to send if the same millisecond's request came first: one run for both
    return batch.job_id(entry, tick)


def history(connection, prefix: str, entries, name: str, count: int = 50) -> list:
    _entry(entries, name)
    return tick_history(connection, prefix, name, count)
