"""The last run of every entry, readable with ``redis-cli HGETALL {prefix}:runs``
(one JSON value per entry) and by the web app."""

from __future__ import annotations

import json

from election import Keys


def record_run(connection, prefix: str, entry: str, **fields) -> None:
    """Keep the entry's last run and count its outcome (``{prefix}:run-counts``,
    field ``<entry>:<outcome>``, for /metrics)."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hset(Keys(prefix).runs, entry, json.dumps({"entry": entry, **fields}, sort_keys=True))
        pipe.hincrby(Keys(prefix).run_counts, f"{entry}:{fields.get('outcome', 'unknown')}", 1)
        pipe.execute()


def run_counts(connection, prefix: str) -> dict:
    """{(entry, outcome): count}."""
    out = {}
    for field, value in connection.hgetall(Keys(prefix).run_counts).items():
        field = field.decode() if isinstance(field, bytes) else field
        entry, _, outcome = field.rpartition(":")
        try:
            out[(entry, outcome)] = int(value)
        except (TypeError, ValueError):
            continue
    return out


def last_runs(connection, prefix: str) -> dict:
    """{entry: {...}}; values that are not Baton's JSON are returned as {'junk': raw}."""
    out = {}
    for name, raw in connection.hgetall(Keys(prefix).runs).items():
        name = name.decode() if isinstance(name, bytes) else name
        try:
            out[name] = json.loads(raw)
        except (TypeError, ValueError):
            out[name] = {"junk": raw.decode(errors="replace") if isinstance(raw, bytes) else raw}
    return out
