"""What Baton keeps about runs, all of it bounded, readable with redis-cli and
by the web app:

- ``{prefix}:runs`` — the last run of every entry (hash: entry -> JSON);
- ``{prefix}:run-log`` — the most recent runs of all entries, with the
  first line of the error of those that failed (a stream capped at
  ``RUN_LOG_MAXLEN``: ``redis-cli XREVRANGE {prefix}:run-log + - COUNT 20``);
- ``{prefix}:failures`` — the last failed run of every entry, so a failure
  stays visible after the run log has moved on (hash: entry -> JSON);
- ``{prefix}:tick-log:{entry}`` — every recent tick of one entry and what
  became of it (a stream capped at ``TICK_LOG_MAXLEN``): ran — ``succeeded``,
  ``failed`` (with the error's type and message), ``interrupted``, ``killed``,
  ``stopped_lease_lost``, ``finished_after_lease_lost`` — or did not run:
  ``skipped`` with a reason (``paused``, ``overlap``, ``coalesced`` by
  missed='latest', ``missed_skip`` by missed='skip', ``no_leader`` within its
  grace) or ``expired`` (``late_start``: a worker took it past its grace;
  ``not_started``: nobody took it). Ticks the planner drops together are one
  record with ``count``, ``tick`` the first and ``last`` the last of them;
- ``{prefix}:run-counts`` — ticks by entry, outcome and reason, for /metrics;
- ``{prefix}:histograms`` — per entry, how late runs started and how long
  they took, counted in fixed buckets (``LATENESS_BUCKETS_S``,
  ``DURATION_BUCKETS_S``) as /metrics' histograms want them, and
  ``{prefix}:last-success`` — when each entry last succeeded.

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

# Ticks kept per entry in its tick log (approximately, as the run log): the
# dashboard's strip shows the newest; ~100 bytes each.
TICK_LOG_MAXLEN = 100

# The fields of a tick-log entry, always all and in this order (see RUN_LOG_FIELDS).
TICK_LOG_FIELDS = ("tick", "outcome", "reason", "site", "token", "attempt", "manual", "duration_ms", "error",
                   "count", "last")


# Buckets (upper bounds, seconds) of the lateness and duration histograms.
# Lateness: a tick's job starts ~20 ms after its time on a healthy site; a
# minute late is a worker that was busy or a leader that was missing.
LATENESS_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# Outcomes of runs whose function ran (their lateness and duration are measured).
RAN_OUTCOMES = ("succeeded", "failed", "interrupted", "killed", "stopped_lease_lost", "finished_after_lease_lost")


def _observe(pipe, key: str, entry: str, name: str, buckets, seconds: float) -> None:
    """One observation: its bucket (the first upper bound >= it, or +Inf) and the sum."""
    bound = next((b for b in buckets if seconds <= b), "+Inf")
    pipe.hincrby(key, f"{entry}|{name}|{bound}", 1)
    pipe.hincrbyfloat(key, f"{entry}|{name}|sum", seconds)


def histograms(connection, prefix: str) -> dict:
    """{(entry, name): {"buckets": {upper bound or '+Inf': count}, "sum": s}} as recorded (not cumulative)."""
    out = {}
    for field, value in connection.hgetall(Keys(prefix).histograms).items():
        entry, name, bound = _text(field).split("|", 2)
        slot = out.setdefault((entry, name), {"buckets": {}, "sum": 0.0})
        try:
            if bound == "sum":
                slot["sum"] = float(value)
            else:
                slot["buckets"][bound] = int(value)
        except ValueError:
            continue
    return out


def last_successes(connection, prefix: str) -> dict:
    """{entry: epoch seconds of its last successful run}."""
    out = {}
    for name, value in connection.hgetall(Keys(prefix).last_success).items():
        try:
            out[_text(name)] = float(value)
        except ValueError:
            continue
    return out


def count_field(entry: str, outcome: str, reason: str | None = None) -> str:
    """The {prefix}:run-counts field of (entry, outcome[, reason])."""
    return f"{entry}:{outcome}:{reason}" if reason else f"{entry}:{outcome}"


def _flat(fields: dict, names) -> dict:
    return {name: "" if fields.get(name) is None else str(fields[name]) for name in names}


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
    with connection.pipeline(transaction=False) as pipe:
        pipe.hset(keys.runs, entry, record)
        pipe.xadd(keys.run_log, _flat(flat, RUN_LOG_FIELDS), maxlen=RUN_LOG_MAXLEN, approximate=True)
        pipe.xadd(keys.tick_log(entry), _flat(flat, TICK_LOG_FIELDS), maxlen=TICK_LOG_MAXLEN, approximate=True)
        if outcome in FAILED_OUTCOMES:
            pipe.hset(keys.failures, entry, record)
        pipe.hincrby(keys.run_counts, count_field(entry, outcome, fields.get("reason")), 1)
        if outcome in RAN_OUTCOMES:
            if fields.get("lateness_ms") is not None:
                _observe(pipe, keys.histograms, entry, "lateness", LATENESS_BUCKETS_S,
                         max(0.0, fields["lateness_ms"] / 1000))
            if fields.get("duration_ms") is not None:
                _observe(pipe, keys.histograms, entry, "duration", DURATION_BUCKETS_S, fields["duration_ms"] / 1000)
        if outcome == "succeeded":
            pipe.hset(keys.last_success, entry, fields["recorded_at"])
        pipe.execute()


def record_not_run(connection, prefix: str, entry: str, outcome: str, reason: str, ticks, **fields) -> None:
    """Ticks of ``entry`` that did not run (oldest first): one tick-log
    record for all of them, counted one by one. ``ticks`` is a list, or a
    (count, first, last) summary for ticks too many to list."""
    count, first, last = (len(ticks), ticks[0], ticks[-1]) if isinstance(ticks, list) else ticks
    if not count:
        return
    keys = Keys(prefix)
    flat = {"tick": first, "outcome": outcome, "reason": reason, "count": count if count > 1 else None,
            "last": last if count > 1 else None, **fields}
    with connection.pipeline(transaction=False) as pipe:
        pipe.xadd(keys.tick_log(entry), _flat(flat, TICK_LOG_FIELDS), maxlen=TICK_LOG_MAXLEN, approximate=True)
        pipe.hincrby(keys.run_counts, count_field(entry, outcome, reason), count)
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
        pipe.hkeys(keys.histograms)
        runs, failures, counts, histogram_fields = pipe.execute(raise_on_error=False)
    if any(isinstance(reply, Exception) for reply in (runs, failures, counts, histogram_fields)):
        return 0  # junk typed at a key by hand: left alone, its readers report it

    def recent(raw) -> bool:
        return now - float(_parse(raw).get("recorded_at") or 0) < PRUNE_AFTER_S

    removed = {_text(name) for name in list(runs) + list(failures)} - keep
    current = {name for name in removed
               if any(recent(records[key]) for records in (runs, failures)
                      for key in (name, name.encode()) if key in records)}
    gone = removed - current
    count_fields = [f for f in counts if _text(f).split(":", 1)[0] not in keep | current]
    with connection.pipeline(transaction=False) as pipe:
        for key, fields in ((keys.runs, [n for n in runs if _text(n) in gone]),
                            (keys.failures, [n for n in failures if _text(n) in gone]),
                            (keys.run_counts, count_fields),
                            (keys.histograms, [f for f in histogram_fields if _text(f).split("|", 1)[0] in gone]),
                            (keys.last_success, list(gone))):
            if fields:
                pipe.hdel(key, *fields)
        for name in gone:
            pipe.delete(keys.tick_log(name))
        pipe.execute(raise_on_error=False)
    return len(gone) + len(count_fields)


def tick_counts(connection, prefix: str) -> dict:
    """{(entry, outcome, reason): count}; reason is '' for runs."""
    out = {}
    for field, value in connection.hgetall(Keys(prefix).run_counts).items():
        entry, _, rest = _text(field).partition(":")
        outcome, _, reason = rest.partition(":")
        try:
            out[(entry, outcome, reason)] = out.get((entry, outcome, reason), 0) + int(value)
        except (TypeError, ValueError):
            continue
    return out


def run_counts(connection, prefix: str) -> dict:
    """{(entry, outcome): count}, whatever the reasons."""
    out = {}
    for (entry, outcome, _reason), n in tick_counts(connection, prefix).items():
        out[(entry, outcome)] = out.get((entry, outcome), 0) + n
    return out


def tick_history(connection, prefix: str, entry: str, count: int = TICK_LOG_MAXLEN) -> list:
    """The newest ``count`` tick records of ``entry``, newest first."""
    return tick_histories(connection, prefix, [entry], count)[entry]


def tick_histories(connection, prefix: str, entries, count: int) -> dict:
    """{entry: its newest ``count`` tick records, newest first}, in one round trip."""
    entries = list(entries)
    with connection.pipeline(transaction=False) as pipe:
        for entry in entries:
            pipe.xrevrange(Keys(prefix).tick_log(entry), "+", "-", count=count)
        replies = pipe.execute()
    return {entry: [_stream_record(fields, ("tick", "last"), ("token", "attempt", "duration_ms", "count"))
                    for _id, fields in reply] for entry, reply in zip(entries, replies)}


def _parse(raw):
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return {"junk": _text(raw)}


def json_hash(connection, key: str) -> dict:
    """{field: its JSON value} of a hash Baton writes; a value that is not
    JSON (typed by hand) is returned as {'junk': raw}."""
    return {_text(name): _parse(raw) for name, raw in connection.hgetall(key).items()}


def last_runs(connection, prefix: str) -> dict:
    """{entry: {...}}; values that are not Baton's JSON are returned as {'junk': raw}."""
    return json_hash(connection, Keys(prefix).runs)


def last_failures(connection, prefix: str) -> dict:
    """{entry: {...}}: each entry's last failed run, with its error."""
    return json_hash(connection, Keys(prefix).failures)


def recent_runs(connection, prefix: str, count: int = 50) -> list:
    """The newest ``count`` runs of all entries, newest first (the error as
    its first line; last_failures has the text)."""
    return [_stream_record(fields, ("tick", "started_at"), ("token", "lateness_ms", "duration_ms"))
            for _id, fields in connection.xrevrange(Keys(prefix).run_log, "+", "-", count=count)]


def _stream_record(fields, floats, ints) -> dict:
    """A run-log or tick-log entry as a dict: empty fields left out, numbers as numbers."""
    record = {_text(name): _text(value) for name, value in fields.items() if _text(value) != ""}
    for names, kind in ((floats, float), (ints, int)):
        for name in names:
            if name in record:
                record[name] = _number(record[name], kind)
    return record


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        return text


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
