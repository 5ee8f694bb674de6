"""What the views know: the master's state file and Redis."""

from __future__ import annotations

import json
import os
import time

from flask import current_app

from redis.exceptions import ResponseError

from election import Keys, LeaseCorrupt, read_lease, ready_sites
from election.outage import OOM_FIX
from workers.controls import paused
from workers.loader import load_schedule
from workers.presence import workers
from workers.sites import sites
from workers.runs import last_failures, last_runs, recent_runs, run_counts, tick_histories

# Runs of all entries /status lists, newest first (the run log keeps ~500).
RECENT_RUNS = 20

# Ticks per entry /status lists (the dashboard's strip).
TICK_STRIP = 20

# A state file older than this means the master stopped refreshing it.
STATE_STALE_S = 5.0


def settings():
    return current_app.extensions["baton"]


# Connections one HTTP worker process may hold. gunicorn's sync workers serve
# one request at a time, so one is used; the second covers a request that
# finds the first one broken. Kept open between requests: a new connection
# per request costs a TCP and, on Heroku, a TLS handshake each time.
WEB_MAX_CONNECTIONS = 2


def redis_client():
    """This app's Redis client, made on first use in each process (a forked
    HTTP worker gets a fresh pool: redis-py checks the pid)."""
    app = current_app
    client = app.extensions.get("baton_redis")
    if client is None:
        client = app.extensions["baton_redis"] = settings().core.redis_client(
            "web", socket_timeout=2, socket_connect_timeout=2, decode_responses=True,
            max_connections=WEB_MAX_CONNECTIONS)
    return client


def raw_redis_client():
    """A client without decode_responses, for RQ (run now builds an RQ job):
    made on first use, one connection, in the HTTP worker that needs it."""
    app = current_app
    client = app.extensions.get("baton_raw_redis")
    if client is None:
        client = app.extensions["baton_raw_redis"] = settings().core.redis_client(
            "web", socket_timeout=2, socket_connect_timeout=2, max_connections=1)
    return client


def schedule_entries() -> list:
    """The schedule, loaded once per process (the master loaded and checked
    the same module at boot)."""
    app = current_app
    loaded = app.extensions.get("baton_entries")
    if loaded is None:
        loaded = app.extensions["baton_entries"] = load_schedule(settings().core.schedule_module)
    return loaded


def master_state() -> dict | None:
    """The gunicorn master's published state, or None outside gunicorn."""
    path = os.environ.get("BATON_STATE_FILE")
    if not path:
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    state["stale"] = time.time() - state.get("written_at", 0) > STATE_STALE_S
    if state.get("role") == "leader" and not (state.get("leader_until") or 0) > time.time():
        # Written while leading, but the term's renew deadline has passed
        # since: the elector no longer believes it leads (a freeze, a lost
        # Redis), whatever the file says until its next rewrite.
        state.update(role="follower", token=None, leader_expired=True)
    return state


def redis_reachable() -> bool:
    try:
        return bool(redis_client().ping())
    except Exception:
        return False


def redis_memory(client, full: bool) -> dict:
    """How full the shared Redis is (INFO memory), and whether this site's
    writes are being refused for want of memory. Some managed Redis refuse
    INFO: then only ``full`` is known."""
    out = {"full": bool(full), "fix": OOM_FIX if full else None}
    try:
        info = client.info("memory")
    except ResponseError:
        return out
    for name in ("used_memory", "maxmemory", "maxmemory_policy"):
        out[name] = info.get(name)
    return out


def site_readiness(client, prefix: str) -> tuple:
    """(election.ready_sites, None), or (None, the problem) for junk at the
    ready key: then no site is said to be eligible or not, and the key is
    left as it is for an operator to look at."""
    try:
        return ready_sites(client, prefix), None
    except LeaseCorrupt as exc:
        return None, {"key": exc.key, "problem": exc.problem, "fix": exc.fix}


def status() -> dict:
    """Everything /status and the dashboard show. Raises redis errors."""
    core = settings().core
    client = redis_client()
    prefix = core.prefix
    keys = Keys(prefix)
    state = master_state() or {}
    try:
        record = read_lease(client, prefix)
        lease, lease_problem = (record.as_dict() if record else None), None
    except LeaseCorrupt as exc:
        lease, lease_problem = None, {"key": exc.key, "problem": exc.problem, "fix": exc.fix}
    site = core.identity.site
    seen_workers = workers(client, prefix)
    ready, ready_problem = site_readiness(client, prefix)
    slots = client.zrange(keys.scheduled_jobs, 0, -1, withscores=True)
    history = []
    for entry_id, fields in client.xrevrange(keys.history, "+", "-", count=50):
        history.append({"at": int(entry_id.split("-")[0]), **fields})
    return {
        "site": site,
        "identity": {"site": site, "dyno": core.identity.dyno, "holder": state.get("holder")},
        "role": "leader" if lease and lease["site"] == site else "follower",
        "leader": lease,
        "lease_problem": lease_problem,
        "time_left_ms": lease["pttl_ms"] if lease else None,
        "timings": {"ttl_s": core.election.ttl, "renew_interval_s": core.election.renew_interval,
                    "renew_deadline_s": core.election.renew_deadline},
        "timezone": core.timezone.key,
        "next_runs": {job_id[len(prefix) + len("-entry-"):]: score for job_id, score in slots},
        "last_runs": last_runs(client, prefix),
        "last_failures": last_failures(client, prefix),
        "recent_runs": recent_runs(client, prefix, RECENT_RUNS),
        "run_counts": {f"{e}:{o}": n for (e, o), n in run_counts(client, prefix).items()},
        "paused": paused(client, prefix),
        # Each entry's newest ticks and what became of them (the dashboard's strip).
        "ticks": tick_histories(client, prefix, [entry.name for entry in schedule_entries()], TICK_STRIP),
        "history": history,
        # Every RQ worker seen lately, of every site: its state says whether
        # it waits for its site to lead, and whether its site competes at all.
        "workers": seen_workers,
        # Every site master, its role (or gone), version, and its workers,
        # and whether its site may lead now (and if not, why not).
        "sites": sites(client, prefix, seen_workers, ready=ready),
        # The sites that may lead: those with a live readiness mark, and the
        # workers that marked them (None: unknown, see ready_problem).
        "ready": None if ready is None else {name: sorted(members) for name, members in sorted(ready.items())},
        "ready_problem": ready_problem,
        "redis": redis_memory(client, state.get("redis_full", False)),
        "process": {k: state.get(k) for k in ("role", "token", "redis_ok", "redis_full", "counters", "worker",
                                               "stale", "ready", "ready_elsewhere")},
        "now_ms": int(time.time() * 1000),
    }
