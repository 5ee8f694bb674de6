"""What Baton keeps about runs, all of it bounded, readable with redis-cli and
by the web app:

- ``{prefix}:runs`` — the last run of every entry (hash: entry -> JSON);
- ``{prefix}:run-log`` — the most recent runs of all entries, with the
  first line of the error of those that failed (a stream capped at
  ``RUN_LOG_MAXLEN``: ``redis-cli XREVRANGE {prefix}:run-log + - COUNT 20``);
- ``{prefix}:failures`` — the last failed run of every entry, so a failure
  stays visible after the run log has moved on (hash: entry -> JSON);
- ``{prefix}:run-counts`` — runs by entry and outcome, for /metrics.

Records of entries that left the schedule are pruned when a leader writes
the schedule (``prune_runs``) once they are ``PRUNE_AFTER_S`` old, so nothing
here grows with entries added and removed over time, while the last runs of
an entry removed by a deploy stay visible for a while after it.
"""

from __future__ import annotations

import json
import time

from election import Keys

# Runs kept in the run log (approximately: Redis trims whole nodes of 100):
# 8 minutes of a 1 s entry, 4 hours of the default schedule, at ~100 bytes
# each. Each entry's last run and last failure are kept apart, for good.
RUN_LOG_MAXLEN = 500

# An error's text is kept to this many characters (the end of a traceback
# says the most).
ERROR_TEXT_MAX = 2000

# A removed entry's records are pruned once this old (a site restarts at least
# daily on Heroku, and each new term prunes).
PRUNE_AFTER_S = 3600

# Outcomes that keep the run in {prefix}:failures.
FAILED_OUTCOMES = ("failed", "killed", "interrupted", "stopped_lease_lost")


def error_text(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_MAX else "…" + text[-(ERROR_TEXT_MAX - 1):]


# The fields of a run-log entry, always all of them and in this order: a
# stream stores the field names of an entry that repeats its master entry's
# once, so each entry costs only its values (~100 bytes).
RUN_LOG_FIELDS = ("entry", "outcome", "tick", "site", "token", "started_at", "lateness_ms", "duration_ms",
                  "reason", "error")

# The run log keeps an error's first line; {prefix}:failures keeps its text.
RUN_LOG_ERROR_MAX = 200


def record_run(connection, prefix: str, entry: str, **fields) -> None:
    """Keep the entry's run: last run, run log, last failure, outcome count."""
    keys = Keys(prefix)
    outcome = fields.get("outcome", "unknown")
    if fields.get("error"):
        fields["error"] = error_text(str(fields["error"]))
    fields.setdefault("recorded_at", time.time())
    record = json.dumps({"entry": entry, **fields}, sort_keys=True)
    flat = {"entry": entry, **fields}
    flat["error"] = str(flat.get("error") or "").split("\n", 1)[0][:RUN_LOG_ERROR_MAX]
    logged = {name: "" if flat.get(name) is None else str(flat[name]) for name in RUN_LOG_FIELDS}
    with connection.pipeline(transaction=False) as pipe:
        pipe.hset(keys.runs, entry, record)
        pipe.xadd(keys.run_log, logged, maxlen=RUN_LOG_MAXLEN, approximate=True)
        if outcome in FAILED_OUTCOMES:
            pipe.hset(keys.failures, entry, record)
        pipe.hincrby(keys.run_counts, f"{entry}:{outcome}", 1)
        pipe.execute()


def prune_runs(connection, prefix: str, entries, now: float | None = None) -> int:
    """Drop the records of entries no longer in the schedule whose last
    record is ``PRUNE_AFTER_S`` old; returns how many fields went."""
    keys, keep = Keys(prefix), set(entries)
    now = time.time() if now is None else now
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.runs)
        pipe.hgetall(keys.failures)
        pipe.hkeys(keys.run_counts)
        runs, failures, counts = pipe.execute(raise_on_error=False)
    if any(isinstance(reply, Exception) for reply in (runs, failures, counts)):
        return 0  # junk typed at a key by hand: left alone, its readers report it

    def recent(raw) -> bool:
        return now - float(_parse(raw).get("recorded_at") or 0) < PRUNE_AFTER_S

    removed = {_text(name) for name in list(runs) + list(failures)} - keep
    current = {name for name in removed
               if any(recent(records[key]) for records in (runs, failures)
                      for key in (name, name.encode()) if key in records)}
    gone = removed - current
    count_fields = [f for f in counts if _text(f).rpartition(":")[0] not in keep | current]
    with connection.pipeline(transaction=False) as pipe:
        for key, fields in ((keys.runs, [n for n in runs if _text(n) in gone]),
                            (keys.failures, [n for n in failures if _text(n) in gone]),
                            (keys.run_counts, count_fields)):
            if fields:
                pipe.hdel(key, *fields)
        pipe.execute(raise_on_error=False)
    return len(gone) + len(count_fields)


def run_counts(connection, prefix: str) -> dict:
    """{(entry, outcome): count}."""
    out = {}
    for field, value in connection.hgetall(Keys(prefix).run_counts).items():
        entry, _, outcome = _text(field).rpartition(":")
        try:
            out[(entry, outcome)] = int(value)
        except (TypeError, ValueError):
            continue
    return out


def _parse(raw):
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return {"junk": _text(raw)}


def last_runs(connection, prefix: str) -> dict:
    """{entry: {...}}; values that are not Baton's JSON are returned as {'junk': raw}."""
    return {_text(name): _parse(raw) for name, raw in connection.hgetall(Keys(prefix).runs).items()}


def last_failures(connection, prefix: str) -> dict:
    """{entry: {...}}: each entry's last failed run, with its error."""
    return {_text(name): _parse(raw) for name, raw in connection.hgetall(Keys(prefix).failures).items()}


def recent_runs(connection, prefix: str, count: int = 50) -> list:
    """The newest ``count`` runs of all entries, newest first (the error as
    its first line; last_failures has the text)."""
    out = []
    for _id, fields in connection.xrevrange(Keys(prefix).run_log, "+", "-", count=count):
        run = {_text(name): _text(value) for name, value in fields.items() if _text(value) != ""}
        for name in ("tick", "started_at"):
            if name in run:
                run[name] = _number(run[name], float)
        for name in ("token", "lateness_ms", "duration_ms"):
            if name in run:
                run[name] = _number(run[name], int)
        out.append(run)
    return out


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        return text


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
