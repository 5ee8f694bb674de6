"""GET /healthz — public: the process runs; its role, whether Redis answers,
and whether the site can work.

Always HTTP 200 while the process serves (Heroku's router and uptime checks
must not take a site down for what it cannot fix itself); ``status`` is
``degraded``, with ``reasons``, when the site leads without a worker that
can run a job (no live readiness mark), cannot reach Redis, or Redis is
full."""

from __future__ import annotations

from flask import Blueprint, jsonify

from election.outage import OOM_FIX

from .state import master_state, redis_reachable, settings

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():
    state = master_state()
    if state is None or state["stale"]:  # outside gunicorn (flask run), or the master stopped publishing
        state = {"role": "unknown", "redis_ok": None}
    role, redis_ok, redis_full, ready = state["role"], state["redis_ok"], state.get("redis_full", False), \
        state.get("ready")
    if redis_ok is None:  # the elector has not talked to Redis yet: ask now
        redis_ok = redis_reachable()
    reasons = []
    if not redis_ok:
        reasons.append("redis_unreachable: the site cannot reach Redis; it does not lead and runs nothing")
    if role == "leader" and ready is False:
        reasons.append("leading_without_worker: no worker of this site can run a job"
                       + ("; handing over to a ready site" if state.get("ready_elsewhere")
                          else "; no ready site waits to take over, so this one keeps leading"))
    extra = {}
    if redis_full:  # it answers, but refuses writes: ticks are not enqueued
        reasons.append("redis_oom: Redis refuses writes for want of memory")
        extra = {"problem": "redis_oom", "fix": OOM_FIX}
    body = {"status": "degraded" if reasons else "ok", "site": settings().core.identity.site, "role": role,
            "redis": "full" if redis_full else "reachable" if redis_ok else "unreachable", "ready": ready, **extra}
    if reasons:
        body["reasons"] = reasons
    return jsonify(body)
