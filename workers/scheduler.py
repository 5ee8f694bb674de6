"""The leader-gated scheduler loop.

Runs on its own thread (rq-scheduler's ``Scheduler.run()`` needs the main
thread). While this site leads it sleeps until the soonest entry falls due —
woken early by an election change or stop(), never a fixed poll — then, for
each due entry, decides which ticks to run (ticks.plan: missed-tick policy and
grace), enqueues one RQ job per tick with a deterministic id, and advances the
entry's slot with a compare-and-set. A tick enqueued twice (two schedulers
ever active at once, or a crash between enqueue and advance) still runs once:
the job claims its tick before running (runner.py). While it leads, the loop
also sweeps for tick jobs a dead worker took and never started, and puts them
back (orphans.py).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job

from election.backoff import Backoff
from election.logfmt import log_event
from election.outage import OutageLog

from .claims import add_to_ledger
from .entries import rq_queue_name
from .orphans import OrphanSweep
from .runner import run_tick
from .store import ScheduleStore
from .ticks import grace_of, plan, tick_id

log = logging.getLogger("baton.scheduler")

# Results of tick jobs are kept a day for RQ's registries and dashboards;
# failures a week. The per-entry last run lives in {prefix}:runs regardless.
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600


class TickScheduler:
    def __init__(self, connection, prefix: str, zone, entries, is_leader, site: str = ""):
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
        self.orphans = OrphanSweep(connection, prefix, site)
        self.enqueued = 0

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
        while not self._stopping.is_set():
            try:
                if not self._leading():
                    self._wake.wait()
                    self._wake.clear()
                    continue
                if self._written_for != self._term_token:
                    changes = self.store.write(list(self.entries.values()))
                    self._written_for = self._term_token
                    self.orphans.restart()
                    log_event(log, logging.INFO, "schedule_written", site=self.site, token=self._term_token,
                              **{name: what for name, what in sorted(changes.items())})
                soonest = self._fire_due()
                sweep_in = self.orphans.sweep_if_due() if self._leading() else None
                wait = None if soonest is None else soonest - time.time()  # after the sweep's round trip
                if sweep_in is not None:
                    wait = sweep_in if wait is None else min(wait, sweep_in)
                self._backoff.reset()
                self._outage.succeeded()
                self._wake.wait(None if wait is None else max(0.0, wait))
                self._wake.clear()
            except RedisError as exc:
                self._outage.failed(exc)
                self._stopping.wait(self._backoff.next())
            except Exception as exc:  # a bug must not end the loop
                log.exception("scheduler loop error")
                log_event(log, logging.ERROR, "scheduler_error", site=self.site, error=repr(exc))
                self._stopping.wait(self._backoff.next())

    def _fire_due(self):
        """Enqueue every due tick; return the soonest next run time."""
        soonest = None
        for name, scheduled in self.store.slots():
            entry = self.entries.get(name)
            if entry is None:
                continue  # written by another version of the schedule; the next write removes it
            now = time.time()
            if scheduled <= now:
                if not self._leading():
                    return None
                run, skipped, following = plan(entry, scheduled, now, self.zone)
                for tick in run:
                    self._enqueue(entry, tick)
                if skipped:
                    log_event(log, logging.WARNING, "ticks_skipped", entry=name, count=len(skipped),
                              policy=entry.missed, first=_iso(skipped[0]), last=_iso(skipped[-1]))
                if not self.store.advance(name, scheduled, following):
                    log_event(log, logging.WARNING, "slot_moved_by_another_scheduler", entry=name)
                    continue
                scheduled = following
            soonest = scheduled if soonest is None else min(soonest, scheduled)
        return soonest

    def _enqueue(self, entry, tick: float) -> None:
        job_id = f"{self.prefix}-{tick_id(entry, tick)}"
        if Job.exists(job_id, connection=self.connection):
            return  # enqueued before a crash or by another scheduler: runs once anyway
        queue = Queue(rq_queue_name(self.prefix, entry.queue), connection=self.connection)
        with self.connection.pipeline() as pipe:  # one MULTI: never enqueued without its ledger entry
            queue.enqueue_call(
                func=run_tick,
                args=(entry.name, tick, job_id, entry.func_path, tuple(entry.args), dict(entry.kwargs),
                      grace_of(entry, tick, self.zone), entry.on_lost_lease, self.prefix),
                job_id=job_id,
                timeout=entry.timeout,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
                description=f"{entry.name} @ {_iso(tick)}",
                meta={"baton_entry": entry.name, "baton_tick": tick, "enqueued_by_token": self._term_token,
                      "baton_on_interrupt": entry.on_interrupt},
                pipeline=pipe,
            )
            add_to_ledger(pipe, self.prefix, job_id, queue.name)
            replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[-1], Exception):  # the ledger is junk; the tick itself is enqueued
            self.orphans.report_junk(replies[-1])
        failed = [reply for reply in replies[:-1] if isinstance(reply, Exception)]
        if failed:
            raise failed[0]
        self.enqueued += 1
        log_event(log, logging.INFO, "tick_enqueued", entry=entry.name, tick=_iso(tick), job_id=job_id,
                  token=self._term_token, lateness_ms=round((time.time() - tick) * 1000))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
