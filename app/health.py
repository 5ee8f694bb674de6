"""GET /healthz — public: the process runs; its role and whether Redis answers."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .state import master_state, redis_reachable, settings

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():
    state = master_state()
    if state is not None and not state["stale"]:
        role, redis_ok = state["role"], state["redis_ok"]
    else:  # outside gunicorn (flask run), or the master stopped publishing
        role, redis_ok = "unknown", None
    if redis_ok is None:  # the elector has not talked to Redis yet: ask now
        redis_ok = redis_reachable()
    return jsonify(status="ok", site=settings().core.identity.site, role=role,
                   redis="reachable" if redis_ok else "unreachable")
