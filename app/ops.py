"""Operator routes, behind HTTP Basic auth: /status, the dashboard,
POST /lease/release and /metrics."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, render_template
from redis.exceptions import RedisError

from election import read_lease, request_step_down

from .auth import require_auth
from .state import master_state, redis_client, settings, status

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


def _metric(lines, name, kind, help_text, samples):
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{label_text}}} {value}")


@ops.get("/metrics")
@require_auth
def metrics():
    site = settings().core.identity.site
    state = master_state() or {}
    counters = state.get("counters", {})
    base = {"site": site}
    lines = []
    _metric(lines, "baton_is_leader", "gauge", "1 while this site's elector leads.",
            [(base, int(state.get("role") == "leader"))])
    _metric(lines, "baton_token", "gauge", "Fencing token of the current term (0 when not leading).",
            [(base, state.get("token") or 0)])
    _metric(lines, "baton_redis_up", "gauge", "1 while the elector's Redis calls succeed.",
            [(base, int(bool(state.get("redis_ok"))))])
    for key, help_text in (
        ("renewals", "Successful lease renewals."),
        ("renew_failures", "Failed renewal attempts."),
        ("elected", "Terms this site won (handoffs to it)."),
        ("demoted", "Terms this site ended."),
        ("released", "Leases released to another site."),
    ):
        _metric(lines, f"baton_{key}_total", "counter", help_text, [(base, counters.get(key, 0))])
    try:
        from workers.runs import run_counts

        runs = run_counts(redis_client(), settings().core.prefix)
        _metric(lines, "baton_job_runs_total", "counter", "Tick runs by entry and outcome (all sites).",
                [({"entry": e, "outcome": o}, n) for (e, o), n in sorted(runs.items())])
    except RedisError:
        pass
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
