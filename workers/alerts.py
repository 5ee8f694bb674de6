"""Telling someone: alerts to webhooks, once per event across every site.

An alert is the opening or the closing (recovery) of a *condition*: an
entry failing (``failing:<entry>``), an entry's ticks not running for a
reason (``not_run:<entry>:<reason>``), no leader for too long
(``no_leader``), a leader that stopped renewing (``not_renewing``), an
entry's slot overdue (``overdue:<entry>``); and, opt-in, each new term
(``leader_changed``, an event with no recovery). Conditions of one entry
close on its next successful run; the others when the watchdog sees them
end (watchdog.py).

Raising costs one round trip and never waits for a webhook:
``HSETNX {prefix}:alerts:open <condition>`` opens a condition once across
every site and process — two sites that notice the same outage never both
send it — and ``HDEL`` closes it once; only the one that did pushes the
alert on the outbox ``{prefix}:alerts:outbox`` (a list capped at
``OUTBOX_MAX``). So a 1 s entry that fails every second sends one alert,
and one recovery; its runs are counted in /metrics meanwhile.

Sending is done by an :class:`AlertSender` thread in a long-lived process
— each RQ worker process after each job, and each site's watchdog at each
look — which pops the outbox (``LPOP`` count: each alert is taken by one
sender) and POSTs it to every configured URL with a short timeout, retried
with backoff (``SEND_ATTEMPTS``), at most ``MAX_PER_MINUTE`` per process (the
rest are logged and counted as dropped). A failing webhook is logged, never
fatal; nothing here blocks the scheduler or a job. Sent, failed and dropped
alerts are counted in ``{prefix}:alert-counts`` for /metrics. Nothing is
raised while no URL is configured.

Not covered: an alert popped by a process that dies before its POST is lost
(logged as popped, not as sent).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from election import Keys
from election.logfmt import log_event

from .runs import json_hash

log = logging.getLogger("baton.alerts")

# Alerts waiting to be sent, at most (the oldest are dropped beyond: a
# webhook down for a day must not fill a 25 MB Redis).
OUTBOX_MAX = 1000

# A POST gives up after this; an alert is tried this many times, waiting
# RETRY_BASE_S, then twice that, ... between tries.
POST_TIMEOUT_S = 5.0
SEND_ATTEMPTS = 4
RETRY_BASE_S = 1.0

# Per sending process: a flood (every tick of a 1 s entry failing) is cut
# down to this many a minute; the rest are logged and counted as dropped.
MAX_PER_MINUTE = 30

# Alerts popped from the outbox at once.
DRAIN_BATCH = 50


@dataclass(frozen=True)
class AlertConfig:
    urls: tuple = ()
    slack: bool = False  # Slack-compatible payload ({"text": ...}) instead of Baton's JSON
    no_leader_after_s: float = 60.0
    leader_changes: bool = False  # opt-in: every new term is an alert

    @property
    def enabled(self) -> bool:
        return bool(self.urls)


@dataclass
class Alert:
    kind: str  # run_failed, tick_not_run, no_leader, not_renewing, entry_overdue, leader_changed
    key: str  # the condition (or, for an event, its unique name): deduplicated across sites
    summary: str  # one line for a person
    fields: dict = field(default_factory=dict)
    recovered: bool = False

    def as_dict(self) -> dict:
        return {"kind": self.kind, "key": self.key, "summary": self.summary, "recovered": self.recovered,
                "at": self.fields.get("at", time.time()), **self.fields}


def raise_alert(connection, prefix: str, alert: Alert, event: bool = False) -> bool:
    """Open (or, ``alert.recovered``, close) the alert's condition and queue
    the alert if this call did it; True if queued. ``event``: no condition,
    always queued (its raiser is the only one). Never raises: an alert that
    cannot be queued is logged."""
    keys = Keys(prefix)
    body = json.dumps(alert.as_dict(), sort_keys=True, default=str)
    try:
        if not event:
            changed = (connection.hdel(keys.alerts_open, alert.key) if alert.recovered
                       else connection.hsetnx(keys.alerts_open, alert.key, body))
            if not changed:
                return False
        with connection.pipeline() as pipe:
            pipe.rpush(keys.alert_outbox, body)
            pipe.ltrim(keys.alert_outbox, -OUTBOX_MAX, -1)
            pipe.execute()
        log_event(log, logging.INFO if alert.recovered else logging.WARNING, "alert_raised", kind=alert.kind,
                  key=alert.key, recovered=alert.recovered)
        return True
    except RedisError as exc:
        log_event(log, logging.WARNING, "alert_not_raised", kind=alert.kind, key=alert.key,
                  error=f"{type(exc).__name__}: {exc}")
        return False


def open_conditions(connection, prefix: str) -> dict:
    """{condition: the alert that opened it}."""
    return json_hash(connection, Keys(prefix).alerts_open)


def payload(alert: dict, slack: bool) -> bytes:
    if slack:
        mark = ":white_check_mark:" if alert.get("recovered") else ":rotating_light:"
        details = ", ".join(f"{k}={v}" for k, v in sorted(alert.items())
                            if k not in ("summary", "kind", "key", "recovered") and v not in (None, ""))
        return json.dumps({"text": f"{mark} Baton {alert['kind']}: {alert['summary']}",
                           "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                                   "text": f"*{alert['summary']}*\n{details}"}}]
                           }).encode()
    return json.dumps({"source": "baton", **alert}, sort_keys=True, default=str).encode()


class AlertSender:
    """Pops the outbox and POSTs each alert to every URL, on a thread of its
    own (see the module docstring). ``drain()`` only wakes the thread."""

    def __init__(self, connection, prefix: str, config: AlertConfig, site: str = ""):
        self.connection, self.prefix, self.config, self.site = connection, prefix, config, site
        self._keys = Keys(prefix)
        self._wake = threading.Event()
        self._work: queue.Queue = queue.Queue()
        self._sent_times: list = []
        self._thread = threading.Thread(target=self._run, name="baton-alerts", daemon=True)
        self._started = False

    def drain(self) -> None:
        if not self.config.enabled:
            return
        if not self._started:
            self._started = True
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.drain_now()

    def drain_now(self) -> None:
        """Send what the outbox holds, in the caller's thread (the watchdog's:
        it closes its connection afterwards on a following site)."""
        if not self.config.enabled:
            return
        try:
            while True:
                batch = self.connection.lpop(self._keys.alert_outbox, DRAIN_BATCH) or []
                if not batch:
                    break
                for raw in batch:
                    self._send(json.loads(raw))
        except RedisError as exc:
            log_event(log, logging.WARNING, "alert_outbox_unreadable", site=self.site,
                      error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not end the sending thread
            log_event(log, logging.ERROR, "alert_sender_error", site=self.site, error=repr(exc))

    def _within_rate(self) -> bool:
        now = time.monotonic()
        self._sent_times = [t for t in self._sent_times if now - t < 60]
        if len(self._sent_times) >= MAX_PER_MINUTE:
            return False
        self._sent_times.append(now)
        return True

    def _send(self, alert: dict) -> None:
        if not self._within_rate():
            log_event(log, logging.WARNING, "alert_dropped", site=self.site, kind=alert["kind"], key=alert["key"],
                      reason=f"more than {MAX_PER_MINUTE} a minute")
            self._count(alert["kind"], "dropped")
            return
        body = payload(alert, self.config.slack)
        for url in self.config.urls:
            outcome = self._post(url, body, alert)
            self._count(alert["kind"], outcome)

    def _post(self, url: str, body: bytes, alert: dict) -> str:
        where = url.split("?")[0].rsplit("/", 1)[0]  # the URL's secret part (Slack's path, a token) is not logged
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                request = urllib.request.Request(url, data=body, method="POST",
                                                 headers={"Content-Type": "application/json",
                                                          "User-Agent": "baton-alerts"})
                with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:
                    response.read()
                log_event(log, logging.INFO, "alert_sent", site=self.site, kind=alert["kind"], key=alert["key"],
                          to=where, attempt=attempt)
                return "sent"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < SEND_ATTEMPTS:
                    time.sleep(RETRY_BASE_S * 2 ** (attempt - 1))
        log_event(log, logging.WARNING, "alert_failed", site=self.site, kind=alert["kind"], key=alert["key"],
                  to=where, attempts=SEND_ATTEMPTS, error=error)
        return "failed"

    def _count(self, kind: str, outcome: str) -> None:
        try:
            self.connection.hincrby(self._keys.alert_counts, f"{kind}:{outcome}", 1)
        except RedisError:
            pass  # the log line says it; the count is best effort
