"""GET /metrics — Prometheus exposition, produced by ``prometheus_client``.

A custom collector (:class:`BatonCollector`) reads, at each scrape, what the
gunicorn master knows (its state file: role, token, counters) and what every
site recorded in Redis (runs, ticks not run, lateness and duration buckets,
last successes, alerts, the lease, the leadership history), and yields
metric families with Prometheus' conventional names and units: counters end
in ``_total``, durations are ``_seconds``. The library formats the text.

Counters of runs and ticks are the deployment's (every site's), the same on
every site: alert on them from one site's scrape or with ``max by``.
``baton_is_leader`` and the ``baton_*_total`` of the elector are this site's.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from redis.exceptions import RedisError

from election import Keys, LeaseCorrupt, read_lease
from workers.controls import paused
from workers.ticks import next_tick
from workers.runs import DURATION_BUCKETS_S, LATENESS_BUCKETS_S, histograms, last_successes, tick_counts

from .auth import require_auth
from .state import master_state, redis_client, schedule_entries, settings

metrics = Blueprint("metrics", __name__)

# Buckets (seconds) of the leaderless-gap histogram: a graceful handoff takes
# about a millisecond; a takeover after a crash, the lease's TTL.
GAP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Leadership history events that end a term, and those that begin one.
_ENDS = ("released", "stepped_down")
_BEGINS = ("acquired", "takeover", "reacquired")


def _histogram(name, help_text, labels, by_label, bounds):
    """A HistogramMetricFamily from per-label bucket counts (not cumulative)."""
    family = HistogramMetricFamily(name, help_text, labels=labels)
    for label_values, recorded in sorted(by_label.items()):
        running, cumulative = 0, []
        for bound in list(bounds) + ["+Inf"]:
            running += recorded["buckets"].get(str(float(bound)) if bound != "+Inf" else "+Inf", 0)
            cumulative.append((str(bound) if bound != "+Inf" else "+Inf", running))
        family.add_metric(list(label_values), cumulative, recorded["sum"])
    return family


def leaderless_gaps(history) -> list:
    """Seconds between a term's graceful end and the next term's start, from
    the history stream (oldest first): what a handoff left without a leader.
    A takeover after a crash is not counted: when the old lease expired is
    not recorded, only when it was taken."""
    gaps, ended_at = [], None
    for entry_id, fields in history:
        at = int(entry_id.split("-")[0]) / 1000
        if fields.get("event") in _ENDS:
            ended_at = at
        elif fields.get("event") in _BEGINS and ended_at is not None:
            gaps.append(max(0.0, at - ended_at))
            ended_at = None
    return gaps


class BatonCollector:
    def __init__(self, state: dict, client, prefix: str, entries, site: str):
        self.state, self.client, self.prefix, self.entries, self.site = state, client, prefix, entries, site

    def collect(self):
        state, site = self.state, self.site
        yield self._gauge("baton_is_leader", "1 while this site's elector leads.",
                          int(state.get("role") == "leader"))
        yield self._gauge("baton_token", "Fencing token of this site's current term (0 when not leading).",
                          state.get("token") or 0)
        yield self._gauge("baton_redis_up", "1 while this site's elector's Redis calls succeed.",
                          int(bool(state.get("redis_ok"))))
        yield self._gauge("baton_site_ready", "1 while a worker of this site can run a job (its readiness "
                                              "mark is live): the site competes for the lease only then.",
                          int(state.get("ready") is True))
        counters = state.get("counters", {})
        for key, help_text in (("renewals", "Successful lease renewals by this site."),
                               ("renew_failures", "Failed renewal attempts by this site."),
                               ("elected", "Terms this site won."),
                               ("demoted", "Terms this site ended."),
                               ("released", "Leases this site released to another."),
                               ("primary_changes", "Redis failovers or restarts this site's elector noticed "
                                                   "(another server run_id after a reconnect).")):
            family = CounterMetricFamily(f"baton_{key}", help_text, labels=["site"])
            family.add_metric([site], counters.get(key, 0))
            yield family
        try:
            yield from self._from_redis()
        except RedisError:
            return  # the master's own metrics still say what it knows (baton_redis_up)

    def _gauge(self, name, help_text, value):
        family = GaugeMetricFamily(name, help_text, labels=["site"])
        family.add_metric([self.site], value)
        return family

    def _from_redis(self):
        client, prefix, keys = self.client, self.prefix, Keys(self.prefix)
        now = time.time()
        runs = CounterMetricFamily("baton_job_runs", "Tick runs by entry and outcome (every site).",
                                   labels=["entry", "outcome"])
        not_run = CounterMetricFamily("baton_ticks_not_run",
                                      "Ticks that did not run, by entry, outcome and reason (every site).",
                                      labels=["entry", "outcome", "reason"])
        for (entry, outcome, reason), n in sorted(tick_counts(client, prefix).items()):
            if reason:
                not_run.add_metric([entry, outcome, reason], n)
            else:
                runs.add_metric([entry, outcome], n)
        yield runs
        yield not_run
        recorded = histograms(client, prefix)
        for name, bounds, help_text in (
                ("lateness", LATENESS_BUCKETS_S, "How late runs started after their tick (every site)."),
                ("duration", DURATION_BUCKETS_S, "How long runs took (every site).")):
            yield _histogram(f"baton_job_{name}_seconds", help_text, ["entry"],
                             {(entry,): r for (entry, kind), r in recorded.items() if kind == name}, bounds)
        successes = last_successes(client, prefix)
        since = GaugeMetricFamily("baton_entry_seconds_since_success",
                                  "Seconds since the entry last ran successfully (absent: never).", labels=["entry"])
        period = GaugeMetricFamily("baton_entry_period_seconds",
                                   "The entry's interval, or the gap between its next two cron times.",
                                   labels=["entry"])
        stopped = GaugeMetricFamily("baton_entry_paused", "1 while an operator has paused the entry.",
                                    labels=["entry"])
        paused_now = paused(client, prefix)
        zone = settings().core.timezone
        for entry in self.entries:
            if entry.name in successes:
                since.add_metric([entry.name], max(0.0, now - successes[entry.name]))
            first = next_tick(entry, now, zone)
            period.add_metric([entry.name], next_tick(entry, first, zone) - first)
            stopped.add_metric([entry.name], int(entry.name in paused_now))
        yield since
        yield period
        yield stopped
        try:
            record = read_lease(client, prefix)
        except LeaseCorrupt:
            record = None
        left = GaugeMetricFamily("baton_lease_seconds_left", "Time left on the lease (0 when nobody leads).")
        left.add_metric([], record.pttl_ms / 1000 if record else 0.0)
        yield left
        history = client.xrange(keys.history, "-", "+")
        gaps = leaderless_gaps(history)
        family = HistogramMetricFamily("baton_leaderless_gap_seconds",
                                       "Time without a leader between a graceful release and the next term "
                                       "(over the kept history).")
        buckets = [(str(b), sum(1 for g in gaps if g <= b)) for b in GAP_BUCKETS_S] + [("+Inf", len(gaps))]
        family.add_metric([], buckets, sum(gaps))
        yield family
        alerts = CounterMetricFamily("baton_alerts", "Alerts by kind and outcome (sent, failed, dropped).",
                                     labels=["kind", "outcome"])
        for field, value in sorted(client.hgetall(keys.alert_counts).items()):
            kind, _, outcome = field.partition(":")
            alerts.add_metric([kind, outcome], int(value))
        yield alerts


@metrics.get("/metrics")
@require_auth
def metrics_text():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatonCollector(master_state() or {}, redis_client(), settings().core.prefix,
                                     schedule_entries(), settings().core.identity.site))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
