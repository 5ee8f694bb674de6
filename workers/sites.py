"""Every site and process taking part, on one page (/status, the dashboard).

Each site's master (the gunicorn master, or ``python -m workers scheduler``)
writes its presence into ``{prefix}:sites`` (hash: holder -> JSON: site,
role, release version, when last seen, worker concurrency and how many of
its workers are alive) at every change of role and at least every
``REFRESH_S``, from a thread of its own (a frozen Redis never holds up the
state file /healthz reads). The RQ workers write their own presence
(presence.py), with the entry each one is running. A process not seen for
``GONE_AFTER_S`` is shown as ``gone`` — not dropped — or as ``stopped`` if
its last write said it was stopping (a shutdown writes at once, without
waiting for it: a frozen Redis must not hold up the stop), and forgotten
only after ``FORGET_AFTER_S``.

A following site's master holds no connection while it waits (the
scheduler's pool is closed then): its presence write opens one and closes it
again, once per ``REFRESH_S``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time

from redis.exceptions import RedisError

from election import Keys
from election.logfmt import log_event

from .presence import READY_LIVE_S

log = logging.getLogger("baton.sites")

# A master writes its presence at least this often (one HSET).
REFRESH_S = 30.0

# Not seen for this long (three refreshes): gone. Forgotten after a day.
GONE_AFTER_S = 3 * REFRESH_S
FORGET_AFTER_S = 24 * 3600.0




def release_version(environ=None) -> str:
    """What this process runs: Heroku's release (``HEROKU_RELEASE_VERSION``,
    with runtime-dyno-metadata), a configured ``BATON_RELEASE``, the build's
    commit (``SOURCE_VERSION``, ``HEROKU_SLUG_COMMIT``), or the checkout's git
    sha; "unknown" if none."""
    env = os.environ if environ is None else environ
    for name in ("HEROKU_RELEASE_VERSION", "BATON_RELEASE"):
        if env.get(name):
            return env[name]
    for name in ("SOURCE_VERSION", "HEROKU_SLUG_COMMIT"):
        if env.get(name):
            return env[name][:12]
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class SitePresence:
    """The master's presence (see the module docstring). ``describe()`` is
    called at each write: {role, worker_concurrency, workers_alive, ...}."""

    def __init__(self, connection, prefix: str, site: str, holder: str, describe, leading):
        self.connection, self.prefix, self.site, self.holder = connection, prefix, site, holder
        self.describe, self.leading = describe, leading
        self.version = release_version()
        self._keys = Keys(prefix)
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="baton-site-presence", daemon=True)

    def start(self) -> "SitePresence":
        self._thread.start()
        return self

    def changed(self) -> None:
        """The role changed: write now."""
        self._changed.set()

    def stop(self, wait: float = 0.0) -> None:
        """One last write, then none: ``describe()`` says ``stopping`` by now.
        Waits up to ``wait`` seconds for that write (a frozen Redis must not
        hold up the stop for longer)."""
        self._stop.set()
        self._changed.set()
        if wait > 0 and self._thread.is_alive():
            self._thread.join(wait)

    def _run(self) -> None:
        # The write comes before the stop check, so a stop always gets its
        # last write, however soon it follows the change that woke the thread.
        while True:
            self.publish()
            if self._stop.is_set():
                return
            self._changed.wait(REFRESH_S)
            self._changed.clear()

    def publish(self) -> None:
        record = {"site": self.site, "holder": self.holder, "version": self.version, "seen_at": time.time(),
                  **self.describe()}
        try:
            self.connection.hset(self._keys.sites, self.holder, json.dumps(record, sort_keys=True))
        except RedisError as exc:
            log_event(log, logging.DEBUG, "site_presence_not_written", site=self.site, error=type(exc).__name__)
        finally:
            if not self.leading():
                # A follower keeps no connection for this. The pool is the
                # scheduler's and the watchdog's too: only idle connections
                # are closed, never one of theirs mid-command.
                self.connection.connection_pool.disconnect(inuse_connections=False)


def sites(connection, prefix: str, workers=(), now: float | None = None, ready: dict | None = None) -> list:
    """Every master seen within FORGET_AFTER_S (older ones are removed
    here), newest first, each with ``state`` — its role, ``gone`` if not
    seen for GONE_AFTER_S — and the RQ workers of its site (presence.py).
    Given ``ready`` (election.ready_sites), each also says whether its site
    may lead (:func:`eligibility`)."""
    keys = Keys(prefix)
    now = time.time() if now is None else now
    out, forget = [], []
    for holder, raw in connection.hgetall(keys.sites).items():
        holder = holder.decode() if isinstance(holder, bytes) else holder
        try:
            record = json.loads(raw)
        except (TypeError, ValueError):
            out.append({"holder": holder, "junk": str(raw), "state": "junk"})
            continue
        age = now - float(record.get("seen_at") or 0)
        if age > FORGET_AFTER_S:
            forget.append(holder)
            continue
        record["seen_s_ago"] = round(age, 1)
        if age <= GONE_AFTER_S:
            record["state"] = record.get("role")
        else:  # not seen lately: it said it was stopping, or it vanished
            record["state"] = "stopped" if record.get("stopping") else "gone"
        out.append(record)
    if forget:
        connection.hdel(keys.sites, *forget)
    by_site = {}
    for worker in workers:
        by_site.setdefault(worker.get("site"), []).append(worker)
    for record in out:
        record["workers"] = by_site.get(record.get("site"), [])
        if ready is not None and record["state"] != "junk":
            record.update(eligibility(record, ready))
    return sorted(out, key=lambda r: -float(r.get("seen_at") or 0))


def eligibility(record: dict, ready: dict) -> dict:
    """Whether the record's site may lead — it does only while one of its
    workers has a live readiness mark (election/readiness.py) — and, if not,
    why not, for the operator who has to fix it."""
    marks = ready.get(record.get("site"), {})
    out = {"eligible": bool(marks), "ready_workers": sorted(marks)}
    if not marks:
        out["why_not"] = why_not(record)
    return out


def why_not(record: dict) -> str:
    """The likeliest reason a site has no live mark, from what its master
    and its workers last said. The most specific cause comes first: a
    stopping master's workers stop too, and dead embedded workers stay
    listed in presence.py for a while after they died."""
    site, state = record.get("site"), record.get("state")
    if state == "gone":
        return f"gone: its master has not been seen for {round(record.get('seen_s_ago') or 0)} s"
    if state == "stopped":
        return "stopped"
    if record.get("stopping"):
        return "stopping"
    if record.get("embedded_worker") and not record.get("workers_alive"):
        return "its embedded workers are not running (restarting?)"
    if record["workers"]:
        return (f"its workers have not marked it ready for over {READY_LIVE_S:g} s "
                "(frozen, or cut off from Redis)")
    if record.get("embedded_worker") is False:
        # A scheduler process never embeds workers: the setting is a web's.
        off = "BATON_EMBEDDED_WORKER=false and " if record.get("process") == "web" else ""
        return f"no worker runs for this site: {off}no worker process (Procfile `worker`) with BATON_SITE={site}"
    # Embedded workers are up but none has said anything yet: a boot.
    return "none of its workers has marked it ready yet (starting?)"
