"""Which RQ workers take part, and what each is doing, for /status.

A worker writes its state (JSON: site, state, the leader's site, since when)
under ``Keys.worker(name)`` with a TTL, and its name in the ``Keys.workers``
index (a zset scored by when it was last seen), whenever its state changes
and at least every ``REFRESH_S``. A worker that stops writing — killed, or
cut off from Redis — drops out of the list after ``TTL_S``; the index is
trimmed on every write, so neither key grows with restarts.

Apart from that record, every worker marks its site ready every
``READY_BEAT_S`` (election/readiness.py: the mark that lets its site compete
for the lease), which lasts ``READY_LIVE_S``.
"""

from __future__ import annotations

import json
import time

from election import Keys

# A worker writes at least this often (its dequeue wait is no longer).
REFRESH_S = 30.0

# A worker not seen for this long is gone: three missed refreshes.
TTL_S = 90

# A worker marks its site ready this often, in every state (a job running
# included: RQ's monitoring of the work horse wakes this often for it)...
READY_BEAT_S = 1

# ...and a mark counts this long: three beats, so one slow round trip never
# makes the site look unable to work. A worker killed, frozen or cut off
# from Redis stops counting after this; its site's leader hands the lease
# over at its next renewal (ElectionConfig.renew_interval) once a ready site
# waits — within READY_LIVE_S + renew_interval, 5 s at the defaults, half
# the lease's ttl.
READY_LIVE_S = 3.0


def record(name: str, state: dict, now: float) -> dict:
    return {"name": name, **state, "seen_at": now}


def publish(connection, prefix: str, name: str, state: dict, now: float | None = None) -> None:
    keys = Keys(prefix)
    now = time.time() if now is None else now
    with connection.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker(name), json.dumps(record(name, state, now), sort_keys=True), ex=TTL_S)
        pipe.zadd(keys.workers, {name: now})
        pipe.zremrangebyscore(keys.workers, "-inf", now - TTL_S)
        pipe.expire(keys.workers, TTL_S)
        pipe.execute()


def running(connection, prefix: str, name: str, record: dict, entry) -> None:
    """The worker's last published record with the entry it runs now (None:
    idle again): one SET, at a job's start and end."""
    connection.set(Keys(prefix).worker(name), json.dumps({**record, "running": entry}, sort_keys=True),
                   ex=TTL_S)


def withdraw(connection, prefix: str, name: str) -> None:
    keys = Keys(prefix)
    with connection.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker(name))
        pipe.zrem(keys.workers, name)
        pipe.execute()


def workers(connection, prefix: str, now: float | None = None) -> list:
    """Every worker seen within TTL_S, by name; junk values are reported as {'junk': raw}."""
    keys = Keys(prefix)
    now = time.time() if now is None else now
    names = [n.decode() if isinstance(n, bytes) else n
             for n in connection.zrangebyscore(keys.workers, now - TTL_S, "+inf")]
    out = []
    for name, raw in zip(names, connection.mget([keys.worker(n) for n in names]) if names else []):
        if raw is None:
            continue
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append({"name": name, "junk": raw.decode(errors="replace") if isinstance(raw, bytes) else raw})
    return out
