"""GET /healthz — public: the process runs; its role and whether Redis answers."""

from __future__ import annotations

from flask import Blueprint, jsonify

from election.outage import OOM_FIX

from .state import master_state, redis_reachable, settings

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():
    state = master_state()
    if state is not None and not state["stale"]:
        role, redis_ok, redis_full = state["role"], state["redis_ok"], state.get("redis_full", False)
    else:  # outside gunicorn (flask run), or the master stopped publishing
        role, redis_ok, redis_full = "unknown", None, False
    if redis_ok is None:  # the elector has not talked to Redis yet: ask now
        redis_ok = redis_reachable()
    if redis_full:  # it answers, but refuses writes: ticks are not enqueued
        return jsonify(status="ok", site=settings().core.identity.site, role=role, redis="full",
                       problem="redis_oom", fix=OOM_FIX)
    return jsonify(status="ok", site=settings().core.identity.site, role=role,
                   redis="reachable" if redis_ok else "unreachable")
