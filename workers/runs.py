"""The last run of every entry, readable with ``redis-cli HGETALL {prefix}:runs``
(one JSON value per entry) and by the web app."""

from __future__ import annotations

import json


def runs_key(prefix: str) -> str:
    return f"{prefix}:runs"


def record_run(connection, prefix: str, entry: str, **fields) -> None:
    connection.hset(runs_key(prefix), entry, json.dumps({"entry": entry, **fields}, sort_keys=True))


def last_runs(connection, prefix: str) -> dict:
    """{entry: {...}}; values that are not Baton's JSON are returned as {'junk': raw}."""
    out = {}
    for name, raw in connection.hgetall(runs_key(prefix)).items():
        name = name.decode() if isinstance(name, bytes) else name
        try:
            out[name] = json.loads(raw)
        except (TypeError, ValueError):
            out[name] = {"junk": raw.decode(errors="replace") if isinstance(raw, bytes) else raw}
    return out
