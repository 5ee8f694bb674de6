"""Every Redis key of one deployment, named here and only here.

Election, workers and the web app all build key names through :class:`Keys`,
so that one prefix (``BATON_PREFIX``) namespaces a whole deployment and a
``redis-cli`` user can find every key in one list. RQ's own keys (jobs,
queues, registries) are named by RQ; the queue names Baton gives it carry the
same prefix (``workers.entries.rq_queue_name``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    # -- the election (election/) -------------------------------------------

    @property
    def lease(self) -> str:
        """The lease: a hash (holder, site, token, times) with a TTL."""
        return f"{self.prefix}:lease"

    @property
    def fence(self) -> str:
        """The last fencing token handed out (INCR)."""
        return f"{self.prefix}:fence"

    @property
    def history(self) -> str:
        """Who led when: a stream of acquired / released / stepped_down / takeover."""
        return f"{self.prefix}:history"

    @property
    def signal(self) -> str:
        """The list a release pushes to, and waiting followers BLPOP."""
        return f"{self.prefix}:lease:released"

    @property
    def step_down(self) -> str:
        """An operator's request that the named holder step down."""
        return f"{self.prefix}:lease:step-down"

    @property
    def elected_channel(self) -> str:
        """Pub/sub channel: every new term is published here (message: the
        site), so waiting workers learn of their site's election by push."""
        return f"{self.prefix}:lease:elected"

    @property
    def waiters(self) -> str:
        """Followers waiting for a release (zset: holder -> end of its wait, ms)."""
        return f"{self.prefix}:lease:waiters"

    @property
    def quarantine(self) -> str:
        """Set after a Redis failover: no term starts while it exists
        (string: who saw the failover, when, the old and new server ids)."""
        return f"{self.prefix}:lease:quarantine"

    @property
    def ready(self) -> str:
        """Who can do a site's work now (zset: '<site>/<member>' -> until
        when it counts, server ms; election/readiness.py). A candidate that
        requires readiness competes only while a member of its site is here."""
        return f"{self.prefix}:lease:ready"

    # -- the schedule and its runs (workers/) -------------------------------

    @property
    def scheduled_jobs(self) -> str:
        """rq-scheduler's sorted set of entry templates, one per deployment."""
        return f"rq:scheduler:{self.prefix}:scheduled_jobs"

    @property
    def ledger(self) -> str:
        """Tick jobs enqueued and not yet started (hash: job id -> queue)."""
        return f"{self.prefix}:ticks:unstarted"

    def run_claim(self, tick_id: str) -> str:
        """Taken (SET NX) by the one run of a tick."""
        return f"{self.prefix}:ran:{tick_id}"

    @property
    def paused(self) -> str:
        """Entries an operator paused (hash: entry -> JSON: by, at, note)."""
        return f"{self.prefix}:paused"

    def running(self, entry: str) -> str:
        """Runs of ``entry`` in progress (zset: '<token>|<job id>' -> until
        when, ms; kept alive by the run's lease watch, so a dead worker's
        mark lapses)."""
        return f"{self.prefix}:running:{entry}"

    def buffered(self, entry: str) -> str:
        """The one tick of ``entry`` waiting for its running run to end
        (overlap='buffer_one'): the id of its job, with the tick's deadline as TTL."""
        return f"{self.prefix}:buffered:{entry}"

    @property
    def retries(self) -> str:
        """Retries of failed runs waiting for their time (zset: job id -> due, s)."""
        return f"{self.prefix}:retries"

    def tick_log(self, entry: str) -> str:
        """Every recent tick of ``entry`` and what became of it (a capped stream)."""
        return f"{self.prefix}:tick-log:{entry}"

    def alert(self, event: str) -> str:
        """Taken (SET NX) by the first site to raise the alert of ``event``."""
        return f"{self.prefix}:alert:{event}"

    @property
    def alert_outbox(self) -> str:
        """Alerts raised and not yet sent (a capped list of JSON)."""
        return f"{self.prefix}:alerts:outbox"

    @property
    def alert_counts(self) -> str:
        """Alerts by kind and outcome (hash: '<kind>:<sent|failed|dropped>' -> count)."""
        return f"{self.prefix}:alert-counts"

    @property
    def alerts_open(self) -> str:
        """Conditions alerted on and not recovered yet (hash: condition -> JSON)."""
        return f"{self.prefix}:alerts:open"

    @property
    def runs(self) -> str:
        """The last run of every entry (hash: entry -> JSON)."""
        return f"{self.prefix}:runs"

    @property
    def run_log(self) -> str:
        """Recent runs of every entry, newest last (a capped stream)."""
        return f"{self.prefix}:run-log"

    @property
    def failures(self) -> str:
        """The last failed run of every entry, with its error (hash: entry -> JSON)."""
        return f"{self.prefix}:failures"

    @property
    def run_counts(self) -> str:
        """Runs by entry and outcome (hash: '<entry>:<outcome>' -> count)."""
        return f"{self.prefix}:run-counts"

    @property
    def histograms(self) -> str:
        """Run lateness and duration per entry, in buckets (hash: '<entry>|<name>|<bound>' -> count)."""
        return f"{self.prefix}:histograms"

    @property
    def last_success(self) -> str:
        """When each entry last succeeded (hash: entry -> epoch s)."""
        return f"{self.prefix}:last-success"

    @property
    def fence_marks(self) -> str:
        """Where fence marks were kept before they had a key each (hash,
        read and emptied by fenced writes; see fence_mark)."""
        return f"{self.prefix}:fence-marks"

    def fence_mark(self, key: str) -> str:
        """The highest token that wrote the fenced ``key``; expires with it."""
        return f"{self.prefix}:fence-mark:{key}"

    @property
    def sites(self) -> str:
        """Every site master taking part (hash: holder -> JSON: role, version, last seen)."""
        return f"{self.prefix}:sites"

    @property
    def workers(self) -> str:
        """The RQ workers taking part (zset: worker name -> last seen, s)."""
        return f"{self.prefix}:workers"

    def worker(self, name: str) -> str:
        """One worker's state (JSON, with a TTL)."""
        return f"{self.prefix}:worker:{name}"
