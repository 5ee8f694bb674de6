"""The function every tick job runs: claim the tick, run the entry, record it.

RQ calls ``run_tick`` in the work horse. A tick that starts later than its
deadline (its due time + grace) is recorded ``expired`` (``late_start``).
Otherwise the fenced claim (claims.CLAIM, one Lua script) decides: the lease
must still name the site and token the worker stamped on the job (else the
tick is *handed back*: a copy goes first in its queue for the site that
leads now, copies.py), the tick — this attempt — must not be claimed yet
(``SET {prefix}:ran:{tick id} NX``: a tick enqueued twice still runs once),
the entry must not be paused, and its overlap policy must let it start
(``skip``: recorded skipped; ``buffer_one``: a copy is parked and enqueued
when the running run ends). A run whose function raises is retried if its
entry has retries left (a copy waits in ``{prefix}:retries``). Every end is
recorded (runs.py).

While the function runs, a watch looks at the lease; if the site loses it,
the entry's on_lost_lease policy applies: ``finish`` lets it finish (logged),
``stop`` interrupts it with LeaseLost. A shutdown that outlasts
BATON_SHUTDOWN_GRACE interrupts it with JobInterrupted (the RQ worker sends
``INTERRUPT_SIGNAL``; worker.py); the run is recorded as ``interrupted``.

Both are raised by a signal handler in the work horse's main thread, which is
where the entry's function runs: a signal sent to that thread also cuts short
a blocking call (sleep, a socket read), which a flag checked between Python
instructions would not. The lease watch's own threads block both signals so
that the kernel never hands them one meant for the job.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
import threading
import time

from redis.exceptions import RedisError
from rq import get_current_job

from election import Keys
from election.logfmt import log_event

from .claims import claim, claim_key_id, claim_ttl, finish, leave_ledger, park, still_leading
from .context import RunContext, reset_current_run, set_current_run
from .copies import copy_id, enqueue_copy, make_copy
from .entries import OVERLAP_SKIP, STOP, resolve, retry_delay
from . import tick_alerts
from .runs import record_not_run, record_run

log = logging.getLogger("baton.jobs")

# How often a running job looks at the lease (one small script, which also
# renews the run's mark in {prefix}:running:{entry}). With on_lost_lease=
# 'stop' this bounds how long a job outlives its site's lease: the look, then
# the signal, well within 1 s.
LEASE_WATCH_INTERVAL_S = 0.5

# How often the watch judges what the looks found. A look on a dead link
# blocks until the job connection's socket timeout (the worker's: 40 s), so
# the judging runs apart from the looking: a site cut off from Redis is
# noticed within this of its renew deadline, with no connection of its own
# (the Mini plan's 20 connections are counted: README).
LEASE_JUDGE_INTERVAL_S = 0.1

# The elector's renew deadline, if the job does not carry its site's (a job
# enqueued by an older version).
DEFAULT_RENEW_DEADLINE_S = 7.0


# Raises LeaseLost in the job (on_lost_lease='stop').
LEASE_LOST_SIGNAL = signal.SIGUSR1

# Raises JobInterrupted in the job: the worker's shutdown grace ran out, or
# its site's master died.
INTERRUPT_SIGNAL = signal.SIGUSR2


class LeaseLost(Exception):
    """The site lost the lease while this job ran (on_lost_lease='stop')."""


class JobInterrupted(BaseException):
    """A shutdown stopped this job (BATON_SHUTDOWN_GRACE ran out). A
    BaseException, like KeyboardInterrupt, so that a job's ``except
    Exception`` does not swallow it."""


def raise_interrupted(_signum, _frame):
    """The work horse's handler until run_tick takes over (worker.py)."""
    raise JobInterrupted("the worker is shutting down")


class _LeaseWatch:
    """Looks at the lease every LEASE_WATCH_INTERVAL_S (a thread on the job's
    own connection pool) and judges every LEASE_JUDGE_INTERVAL_S (another
    thread, no Redis). The site counts as having lost the lease when a look
    finds the lease naming another holder, or when no look has confirmed it
    for the site's renew deadline (cut off from Redis: by then its elector
    has stepped down too, and another site may take over once the lease
    expires). Both threads block the job's signals, so that the kernel never
    hands them one meant for the job's main thread."""

    def __init__(self, connection, prefix, site, token, entry, job_id, stop_job, renew_deadline):
        self.connection, self.prefix, self.site, self.token = connection, prefix, site, token
        self.entry, self.job_id, self.stop_job = entry, job_id, stop_job
        self.renew_deadline = renew_deadline
        self.done = threading.Event()
        self.lost = False
        self._moved = False  # a look found another holder
        self._confirmed_at = time.monotonic()
        self.main_thread = threading.get_ident()  # built in the job's thread

    def start(self) -> None:
        for target, name in ((self._look, "baton-lease-look"), (self._judge, "baton-lease-judge")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _look(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {LEASE_LOST_SIGNAL, INTERRUPT_SIGNAL})
        while not self.done.wait(LEASE_WATCH_INTERVAL_S) and not self.lost:
            asked_at = time.monotonic()
            try:
                if still_leading(self.connection, self.prefix, self.site, self.token, self.entry, self.job_id):
                    self._confirmed_at = asked_at
                else:
                    self._moved = True
                    return
            except RedisError:
                continue  # the judge counts towards the renew deadline

    def _judge(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {LEASE_LOST_SIGNAL, INTERRUPT_SIGNAL})
        while not self.done.wait(LEASE_JUDGE_INTERVAL_S):
            if self._moved:
                self._lost("lease_moved")
                return
            if time.monotonic() - self._confirmed_at >= self.renew_deadline:
                self._lost("redis_unreachable")
                return

    def _lost(self, why: str) -> None:
        self.lost = True
        log_event(log, logging.WARNING, "lease_lost_mid_run", entry=self.entry, site=self.site, token=self.token,
                  why=why, policy="stop" if self.stop_job else "finish")
        if self.stop_job:
            signal.pthread_kill(self.main_thread, LEASE_LOST_SIGNAL)


def _raise_lease_lost(_signum, _frame):
    raise LeaseLost("the site lost the lease while this job ran")


class _Interrupts:
    """INTERRUPT_SIGNAL while run_tick runs: raised as JobInterrupted inside
    the entry's function, only remembered outside it, so the claim and the
    run record are never cut in half."""

    def __init__(self):
        self.requested = False
        self.raising = False

    def __call__(self, _signum, _frame):
        self.requested = True
        if self.raising:
            self.raising = False
            raise JobInterrupted("a shutdown interrupted the job: BATON_SHUTDOWN_GRACE ran out, or the site's master died")


def run_tick(entry_name, tick, tick_id, func_path, args, kwargs, grace, on_lost_lease, prefix):
    interrupts = _Interrupts()
    previous_interrupt = signal.signal(INTERRUPT_SIGNAL, interrupts)
    try:
        return _run_tick(interrupts, entry_name, tick, tick_id, func_path, args, kwargs, grace, on_lost_lease,
                         prefix)
    finally:
        signal.signal(INTERRUPT_SIGNAL, previous_interrupt)


def _run_tick(interrupts, entry_name, tick, tick_id, func_path, args, kwargs, grace, on_lost_lease, prefix):
    job = get_current_job()
    connection = job.connection
    meta = job.meta
    site, token = meta.get("baton_site"), meta.get("baton_token")
    # Jobs enqueued by an older version carry none of these: a scheduled first attempt.
    attempt, manual = int(meta.get("baton_attempt") or 0), bool(meta.get("baton_manual"))
    due = float(meta.get("baton_due") or tick)
    deadline = float(meta.get("baton_deadline") or due + grace)
    started = time.time()
    lateness = started - due
    about = {"tick": tick, "site": site, "token": token, "attempt": attempt or None, "manual": meta.get("baton_manual") or None}
    if started > deadline:
        leave_ledger(connection, prefix, job.id)
        record_run(connection, prefix, entry_name, **about, outcome="expired", reason="late_start",
                   started_at=started, lateness_ms=round(lateness * 1000), duration_ms=0, job_id=job.id)
        log_event(log, logging.WARNING, "tick_expired", entry=entry_name, tick=tick, lateness_ms=round(lateness * 1000))
        if meta.get("baton_alerts"):
            tick_alerts.entry_not_run(connection, prefix, entry_name, reason="late_start", tick=tick, site=site)
        return "expired"
    verdict = _claim(job, entry_name, tick_id, attempt, deadline, started, prefix)
    if verdict != "claimed":
        return verdict
    if meta.get("baton_claim_pipe") is not None:  # its worker sends the entry's start ping (pings.py)
        try:
            os.write(meta["baton_claim_pipe"], b"1")
        except OSError:
            pass
    func = resolve(func_path, f"schedule entry {entry_name!r}")
    log_event(log, logging.INFO, "job_start", entry=entry_name, site=site, token=token,
              lateness_ms=round(lateness * 1000), job_id=job.id, **({"attempt": attempt} if attempt else {}),
              **({"manual": 1} if manual else {}))
    stop_job = on_lost_lease == STOP
    if stop_job:
        previous_handler = signal.signal(LEASE_LOST_SIGNAL, _raise_lease_lost)
    watch = _LeaseWatch(connection, prefix, site, token, entry_name, job.id, stop_job,
                        float(meta.get("baton_renew_deadline") or DEFAULT_RENEW_DEADLINE_S))
    watch.start()
    context_token = set_current_run(RunContext(entry_name, tick, site, token, prefix, connection))
    outcome, error = "failed", None
    try:
        if interrupts.requested:  # before the function began: it never runs
            raise JobInterrupted("the worker was stopping before the job began")
        interrupts.raising = True
        try:
            result = func(*args, **kwargs)
        finally:
            interrupts.raising = False
        outcome = "finished_after_lease_lost" if watch.lost else "succeeded"
        return result
    except LeaseLost:
        outcome = "stopped_lease_lost"
        raise
    except JobInterrupted:
        outcome = "interrupted"
        raise
    except Exception as exc:  # RQ files the job as failed; the run record keeps why
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        raise
    finally:
        watch.done.set()
        reset_current_run(context_token)
        if stop_job:
            signal.signal(LEASE_LOST_SIGNAL, previous_handler)
        duration = time.time() - started
        record_run(connection, prefix, entry_name, **about, outcome=outcome, started_at=started,
                   lateness_ms=round(lateness * 1000), duration_ms=round(duration * 1000), job_id=job.id,
                   error=error)
        log_event(log, logging.INFO if outcome == "succeeded" else logging.WARNING, "job_end", entry=entry_name,
                  site=site, token=token, outcome=outcome, duration_ms=round(duration * 1000),
                  **({"error": error.splitlines()[0]} if error else {}))
        retry_follows = outcome == "failed" and _schedule_retry(job, entry_name, tick_id, attempt, grace, prefix)
        end_run(job, entry_name, prefix)
        if meta.get("baton_alerts"):
            if outcome == "failed":
                tick_alerts.entry_failed(connection, prefix, entry_name, tick=tick, site=site, token=token,
                                         error=error, attempt=attempt, retry_follows=retry_follows)
            elif outcome == "succeeded":
                tick_alerts.entry_succeeded(connection, prefix, entry_name, tick=tick, site=site, token=token)


def _claim(job, entry_name, tick_id, attempt, deadline, now, prefix) -> str:
    """The fenced claim (claims.CLAIM) and what each verdict does; returns
    'claimed', or what became of the tick instead."""
    connection, meta = job.connection, job.meta
    site, token, tick = meta.get("baton_site"), meta.get("baton_token"), job.args[1]
    overlap = meta.get("baton_overlap") or OVERLAP_SKIP
    ask = dict(site=site, token=token, job_id=job.id, claim_id=claim_key_id(tick_id, attempt),
               ttl_s=claim_ttl(deadline, now), entry=entry_name, overlap=overlap,
               manual=bool(meta.get("baton_manual")), buffered_copy=bool(meta.get("baton_buffered")),
               replicas_ack=meta.get("baton_replicas_ack"))
    verdict = claim(connection, prefix, **ask)
    while verdict[0] == "buffer":
        copy = make_copy(job, copy_id(tick_id, "b"), deadline, now, baton_buffered=True)
        parked = park(connection, prefix, entry_name, copy.id, (deadline - time.time()) * 1000, token)
        if parked == "parked":
            log_event(log, logging.INFO, "tick_buffered", entry=entry_name, tick=tick, job_id=copy.id,
                      waits_for=verdict[1])
            return "buffered"
        copy.delete()
        if parked == "taken":  # another tick waits already: this one is skipped
            verdict = ["overlap", verdict[1]]
            break
        verdict = claim(connection, prefix, **ask)  # the run it waited for ended meanwhile
    if verdict[0] == "claimed":
        return "claimed"
    if verdict[0] == "not_leader":
        # Not run, not claimed: the tick goes to the site that leads now.
        copy = make_copy(job, copy_id(tick_id, "h"), deadline, now)
        enqueue_copy(connection, prefix, copy.id, at_front=True)
        log_event(log, logging.WARNING, "tick_handed_back", entry=entry_name, tick=tick, site=site, token=token,
                  leader_site=verdict[1] or None, leader_token=verdict[2] or None, job_id=copy.id)
        return "handed_back"
    if verdict[0] == "duplicate":
        log_event(log, logging.WARNING, "tick_duplicate", entry=entry_name, tick=tick, job_id=job.id)
        return "duplicate"
    if verdict[0] == "unreplicated":
        # Claimed on the primary, but no replica confirmed it in time: a
        # failover now could forget the claim and let the next leader run the
        # tick again, so it does not run here (BATON_REDIS_REPLICAS_ACK).
        log_event(log, logging.WARNING, "tick_claim_unreplicated", entry=entry_name, tick=tick,
                  replicas_acked=verdict[1], job_id=job.id)
        end_run(job, entry_name, prefix)  # its running mark goes (overlap)
    reason = verdict[0]  # paused, overlap
    record_not_run(connection, prefix, entry_name, "skipped", reason, [tick], site=site, token=token,
                   attempt=attempt or None)
    log_event(log, logging.INFO, "tick_skipped", entry=entry_name, tick=tick, reason=reason,
              **({"running": verdict[1]} if reason == "overlap" else {}))
    if meta.get("baton_alerts"):
        tick_alerts.entry_not_run(connection, prefix, entry_name, reason=reason, tick=tick, site=site)
    return "skipped"


def _schedule_retry(job, entry_name, tick_id, attempt, grace, prefix) -> bool:
    """A failed attempt with retries left: its copy waits in {prefix}:retries.
    True if a retry was scheduled."""
    retries = int(job.meta.get("baton_retries") or 0)
    if attempt >= retries:
        return False
    delay = retry_delay(float(job.meta.get("baton_retry_backoff") or 10), attempt)
    now = time.time()
    due = now + delay
    try:
        copy = make_copy(job, copy_id(tick_id, f"r{attempt + 1}"), due + grace, now, baton_attempt=attempt + 1,
                         baton_due=due)
        job.connection.zadd(Keys(prefix).retries, {copy.id: due})
    except RedisError as exc:
        log_event(log, logging.ERROR, "retry_not_scheduled", entry=entry_name, job_id=job.id,
                  error=f"{type(exc).__name__}: {exc}")
        return False
    log_event(log, logging.WARNING, "retry_scheduled", entry=entry_name, attempt=attempt + 1, of=retries,
              in_s=round(delay, 1), job_id=copy.id)
    return True


def end_run(job, entry_name, prefix) -> None:
    """The run's mark goes; a tick buffered behind it is enqueued now."""
    try:
        waiting = finish(job.connection, prefix, entry_name, job.id, job.meta.get("baton_token"))
        if waiting and enqueue_copy(job.connection, prefix, waiting, at_front=True) is not None:
            log_event(log, logging.INFO, "buffered_tick_released", entry=entry_name, job_id=waiting)
    except RedisError as exc:  # the mark lapses by itself (claims.RUNNING_MARK_TTL_MS)
        log_event(log, logging.WARNING, "run_end_not_settled", entry=entry_name, job_id=job.id,
                  error=f"{type(exc).__name__}: {exc}")
