"""The leader-gated scheduler loop.

Runs on its own thread (rq-scheduler's ``Scheduler.run()`` needs the main
thread). While this site leads it sleeps until the soonest entry falls due —
woken early by an election change or stop(), never a fixed poll — then, for
each due entry, decides which ticks to run (ticks.plan: missed-tick policy and
grace), enqueues one RQ job per tick with a deterministic id — all the
ticks of one wake-up built just before their time and sent in one MULTI
(batch.py) — and advances each entry's slot with a compare-and-set. A tick
enqueued twice (two schedulers ever active at once, or a crash between
enqueue and advance) still runs once:
the job claims its tick before running (runner.py). While it leads, the loop
also sweeps for tick jobs a dead worker took and never started, and puts them
back (orphans.py).
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import RedisError

from election import Keys
from election.backoff import Backoff
from election.logfmt import log_event
from election.outage import OutageLog

from . import tick_alerts
from .alerts import AlertConfig
from .batch import TickBatch, iso
from .copies import enqueue_copy
from .entries import CATCH_UP, LATEST
from .orphans import OrphanSweep
from .runs import prune_runs, record_not_run
from .store import ScheduleStore
from .ticks import plan

log = logging.getLogger("baton.scheduler")

# Ticks are built this long before they fall due (workers/batch.py) — twice
# what the last build took, within these bounds: a few ms for a handful of
# entries, ~0.2 s for a thousand due in the same second.
MIN_PREPARE_AHEAD_S = 0.005
MAX_PREPARE_AHEAD_S = 2.0

# The scheduler, the watchdog and the presence writer share one connection
# (the README's connection budget counts one per site), taking turns on it.
# The longest turn is the scheduler's: from a batch's build to its send
# (MAX_PREPARE_AHEAD_S), then one command that may wait out redis-py's
# default 5 s socket timeout on a dead link. A thread waits that long for
# its turn, then fails like any other Redis error.
CONNECTION_TURN_WAIT_S = MAX_PREPARE_AHEAD_S + 5.0 + 1.0

# While any entry has retries, the leader looks this often for retries that
# fell due ({prefix}:retries: a failed run's worker adds them, in another
# process, so nothing wakes this loop). A retry starts up to this late; an
# idle leader pays one ZRANGE per period, only with such entries.
RETRY_POLL_S = 5.0


def skip_reason(entry, ran_any: bool) -> str:
    """Why the planner dropped an entry's ticks (runs.py's reasons)."""
    if entry.missed == LATEST and ran_any:
        return "coalesced"  # a newer tick of the same gap runs instead
    if entry.missed == LATEST or entry.missed == CATCH_UP:
        return "no_leader"  # past their grace when a leader planned them
    return "missed_skip"


class TickScheduler:
    def __init__(self, connection, prefix: str, zone, entries, is_leader, site: str = "",
                 alerts: AlertConfig = AlertConfig()):
        self.connection = connection
        self.prefix = prefix
        self.zone = zone
        self.entries = {entry.name: entry for entry in entries}
        self.store = ScheduleStore(connection, prefix, zone)
        self._is_leader = is_leader  # the elector's is_leader: true only inside the renew deadline
        self.site = site
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._term_token = None
        self._written_for = None
        self._thread = threading.Thread(target=self._run, name="baton-scheduler", daemon=True)
        self._backoff = Backoff(0.05, 2.0)
        self._outage = OutageLog(log, site, "scheduler")
        self.alerts = alerts
        self.orphans = OrphanSweep(connection, prefix, site, alerts=alerts.enabled)
        self._prepare_ahead = MIN_PREPARE_AHEAD_S
        self._keys = Keys(prefix)
        self._retrying = any(entry.retries for entry in entries)
        self.enqueued = 0

    @property
    def redis_full(self) -> bool:
        """True while Redis refuses the enqueues for want of memory."""
        return self._outage.full

    # election callbacks ------------------------------------------------------

    def on_elected(self, token: int) -> None:
        self._term_token = token
        self._wake.set()

    def on_demoted(self, _reason: str) -> None:
        self._term_token = None
        self._wake.set()

    # lifecycle ---------------------------------------------------------------

    def start(self) -> "TickScheduler":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop enqueuing (a tick being enqueued finishes first)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # loop ----------------------------------------------------------------------

    def _leading(self) -> bool:
        return self._term_token is not None and self._is_leader() and not self._stopping.is_set()

    def _run(self) -> None:
        woken, soonest = True, None
        while not self._stopping.is_set():
            try:
                if not self._leading():
                    # A follower needs no connection until it leads again (idle
                    # ones only: the watchdog and the presence writer share the pool).
                    self.connection.connection_pool.disconnect(inuse_connections=False)
                    self._wake.wait()
                    self._wake.clear()
                    woken = True
                    continue
                if self._written_for != self._term_token:
                    changes = self.store.write(list(self.entries.values()))
                    pruned = prune_runs(self.connection, self.prefix, self.entries)
                    self._written_for = self._term_token
                    self.orphans.restart()
                    log_event(log, logging.INFO, "schedule_written", site=self.site, token=self._term_token,
                              **({"pruned_run_records": pruned} if pruned else {}),
                              **{name: what for name, what in sorted(changes.items())})
                if woken or (soonest is not None and time.time() >= soonest - self._prepare_ahead):
                    soonest = self._fire_due()  # not on a wake-up only for the sweep: the slots did not move
                sweep_in = self.orphans.sweep_if_due() if self._leading() else None
                wait = None if soonest is None else soonest - self._prepare_ahead - time.time()
                if sweep_in is not None:
                    wait = sweep_in if wait is None else min(wait, sweep_in)
                self._backoff.reset()
                self._outage.succeeded()
                woken = self._wake.wait(None if wait is None else max(0.0, wait))
                self._wake.clear()
            except RedisError as exc:
                woken = True
                self._outage.failed(exc)
                self._stopping.wait(self._backoff.next())
            except Exception as exc:  # a bug must not end the loop
                log.exception("scheduler loop error")
                log_event(log, logging.ERROR, "scheduler_error", site=self.site, error=repr(exc))
                woken = True
                self._stopping.wait(self._backoff.next())

    def _fire_due(self):
        """Enqueue every tick due now or within the prepare-ahead time (built
        first, sent at its time); return the next slot time after them."""
        slots = self.store.slots()
        horizon = time.time() + self._prepare_ahead
        due = [(self.entries[name], scheduled) for name, scheduled in slots
               if name in self.entries and scheduled <= horizon]
        # An entry missing here was written by another version of the
        # schedule; the next write removes it.
        later = [scheduled for name, scheduled in slots if name in self.entries and scheduled > horizon]
        if due:
            later += self._fire(due)
        if self._retrying:
            self._enqueue_due_retries()
            later.append(time.time() + RETRY_POLL_S)
        return min(later) if later else None

    def _enqueue_due_retries(self) -> None:
        due = self.connection.zrangebyscore(self._keys.retries, "-inf", time.time())
        for job_id in due:
            job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
            job = enqueue_copy(self.connection, self.prefix, job_id, at_front=False)
            self.connection.zrem(self._keys.retries, job_id)
            if job is not None:
                log_event(log, logging.INFO, "retry_enqueued", entry=job.meta.get("baton_entry"), job_id=job_id,
                          attempt=job.meta.get("baton_attempt"), token=self._term_token)

    def enqueue(self, ticks) -> list:
        """Enqueue ``[(entry, tick), ...]`` now, in one MULTI; returns the
        job ids enqueued (a tick enqueued before is left as it is)."""
        batch = TickBatch(self.connection, self.prefix, self.zone, self._term_token).prepare(ticks)
        for problem in batch.execute():
            self.orphans.report_junk(problem)
        self.orphans.note_enqueued()
        return [job_id for _entry, _tick, job_id in batch.jobs]

    def _fire(self, due) -> list:
        """Plan, build, wait for the tick, send, then advance every slot;
        returns the slots' next times (none if nothing was sent)."""
        prepared_at = time.monotonic()
        at = max(time.time(), max(scheduled for _entry, scheduled in due))
        plans = [(entry, scheduled) + plan(entry, scheduled, at, self.zone) for entry, scheduled in due]
        paused = {name.decode() if isinstance(name, bytes) else name
                  for name in self.connection.hkeys(self._keys.paused)}
        batch = TickBatch(self.connection, self.prefix, self.zone, self._term_token)
        batch.prepare((entry, tick) for entry, _scheduled, run, _skipped, _following in plans for tick in run
                      if entry.name not in paused)
        # Next time, start building this much before the tick: twice what it took now.
        self._prepare_ahead = min(MAX_PREPARE_AHEAD_S, max(MIN_PREPARE_AHEAD_S, 2 * (time.monotonic() - prepared_at)))
        if self._stopping.wait(max(0.0, at - time.time())) or not self._leading():
            batch.discard()  # stopped or demoted meanwhile: the next leader plans these ticks again
            return []
        for problem in batch.execute():  # junk at the ledger key; the ticks themselves are enqueued
            self.orphans.report_junk(problem)
        sent = time.time()
        self.enqueued += len(batch.jobs)
        self.orphans.note_enqueued()
        for entry, tick, job_id in batch.jobs:
            log_event(log, logging.INFO, "tick_enqueued", entry=entry.name, tick=iso(tick), job_id=job_id,
                      token=self._term_token, lateness_ms=round((sent - tick) * 1000))
        for entry, _scheduled, run, skipped, _following in plans:
            if skipped:
                reason = skip_reason(entry, bool(run))
                log_event(log, logging.WARNING, "ticks_skipped", entry=entry.name,
                          count=skipped.count if skipped.exact else f"{skipped.count}+", policy=entry.missed,
                          reason=reason, first=iso(skipped.first), **({"last": iso(skipped.last)} if skipped.last else {}))
                record_not_run(self.connection, self.prefix, entry.name, "skipped", reason,
                               (skipped.count, skipped.first, skipped.last or skipped.first), site=self.site,
                               token=self._term_token)
                if self.alerts.enabled:
                    tick_alerts.entry_not_run(self.connection, self.prefix, entry.name, reason=reason,
                                              tick=skipped.first, count=skipped.count, site=self.site)
            if run and entry.name in paused:
                record_not_run(self.connection, self.prefix, entry.name, "skipped", "paused", list(run),
                               site=self.site, token=self._term_token)
                log_event(log, logging.INFO, "tick_skipped", entry=entry.name, tick=iso(run[-1]), reason="paused",
                          count=len(run))
        moved = self.store.advance_all([(entry.name, scheduled, following)
                                        for entry, scheduled, _run, _skipped, following in plans])
        for name in moved:
            log_event(log, logging.WARNING, "slot_moved_by_another_scheduler", entry=name)
        # A slot another scheduler moved is read again at once.
        return [following for entry, _scheduled, _run, _skipped, following in plans
                if entry.name not in moved] + ([time.time()] if moved else [])
