"""Operator routes for one schedule entry, behind HTTP Basic auth (and,
for the POSTs, the CSRF rule of app/csrf.py): pause, resume, run now,
history. The same as ``flask --app app baton pause|resume|run|history``
(app/cli.py); what each does is in workers/controls.py."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from redis.exceptions import RedisError

from workers import controls

from .auth import require_auth
from .state import raw_redis_client, redis_client, schedule_entries, settings

entries = Blueprint("entries", __name__, url_prefix="/entries")


def _who() -> str:
    """Who acted, as the records keep it: the Basic auth user and the site whose page was used."""
    auth = request.authorization
    return f"{auth.username if auth else 'unknown'}@{settings().core.identity.site} (web)"


def _act(action):
    try:
        return action()
    except controls.UnknownEntry as exc:
        return jsonify(error=str(exc)), 404
    except RedisError as exc:
        return jsonify(error="redis unreachable", detail=type(exc).__name__), 503


@entries.post("/<name>/pause")
@require_auth
def pause(name):
    body = request.get_json(silent=True) or {}
    note = body.get("note") if isinstance(body.get("note"), str) else ""
    return _act(lambda: jsonify(entry=name, paused=controls.pause(
        redis_client(), settings().core.prefix, schedule_entries(), name, _who(), note)))


@entries.post("/<name>/resume")
@require_auth
def resume(name):
    return _act(lambda: jsonify(entry=name, resumed=controls.resume(
        redis_client(), settings().core.prefix, schedule_entries(), name)))


@entries.post("/<name>/run")
@require_auth
def run_now(name):
    core = settings().core
    return _act(lambda: (jsonify(entry=name, job_id=controls.run_now(
        raw_redis_client(), core.prefix, schedule_entries(), core.timezone, name, _who())), 202))


@entries.get("/<name>/history")
@require_auth
def history(name):
    count = request.args.get("count", default=50, type=int)
    return _act(lambda: jsonify(entry=name, ticks=controls.history(
        redis_client(), settings().core.prefix, schedule_entries(), name, max(1, min(count, 1000)))))
