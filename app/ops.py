"""Operator routes, behind HTTP Basic auth: /status, the dashboard and
POST /lease/release (/metrics: metrics.py; the entries' controls: entries.py)."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, render_template
from redis.exceptions import RedisError

from election import read_lease, request_step_down

from .auth import require_auth
from .state import redis_client, settings, status

ops = Blueprint("ops", __name__)

# How long POST /lease/release waits to see another site take the lease: the
# leader honours the request at its next renewal.
RELEASE_WAIT_S = 5.0

# Once the lease is free, how long the answer waits to name the site that took
# over (a waiting site acquires within milliseconds; a lone site does not).
TAKEOVER_WAIT_S = 1.0


@ops.get("/status")
@require_auth
def status_json():
    try:
        return jsonify(status())
    except RedisError as exc:
        return jsonify(error="redis unreachable", detail=type(exc).__name__), 503


@ops.get("/")
@require_auth
def dashboard():
    return render_template("dashboard.html", site=settings().core.identity.site)


@ops.post("/lease/release")
@require_auth
def release():
    core = settings().core
    client = redis_client()
    try:
        record = read_lease(client, core.prefix)
        if record is None or record.site != core.identity.site:
            return jsonify(error="this site does not hold the lease",
                           leader=record.site if record else None), 409
        request_step_down(client, core.prefix)
        deadline = time.monotonic() + core.election.renew_interval + RELEASE_WAIT_S
        released = False
        while time.monotonic() < deadline:
            now = read_lease(client, core.prefix)
            if now is not None and (now.holder, now.token) != (record.holder, record.token):
                return jsonify(released=True, previous=record.as_dict(), leader=now.as_dict())
            if now is None and not released:
                # Usually the millisecond between the release and a waiting
                # site's acquire: look a little longer, to say who took over.
                released = True
                deadline = min(deadline, time.monotonic() + TAKEOVER_WAIT_S)
            time.sleep(0.005 if released else 0.05)
        if released:
            return jsonify(released=True, previous=record.as_dict(), leader=None)
        return jsonify(error="step-down requested but the leader has not released yet"), 504
    except RedisError as exc:
        return jsonify(error="redis unreachable", detail=type(exc).__name__), 503
