"""The function every tick job runs: claim the tick, run the entry, record it.

RQ calls ``run_tick`` in the work horse. Before the entry's function it takes
the tick's run claim (``SET {prefix}:ran:{tick id} NX``, claims.py) — so even
a tick that was enqueued twice (two schedulers once active together, or a
requeue of a frozen worker's job) runs at most once — and drops a tick that
starts later than its grace window. While the function runs, a watchdog
re-reads the lease; if the site loses it, the entry's on_lost_lease policy
applies: ``finish`` lets it finish (logged), ``stop`` interrupts it with
LeaseLost. A shutdown that outlasts BATON_SHUTDOWN_GRACE interrupts it with
JobInterrupted (the RQ worker sends ``INTERRUPT_SIGNAL``; worker.py); the run
is recorded as ``interrupted``.

Both are raised by a signal handler in the work horse's main thread, which is
where the entry's function runs: a signal sent to that thread also cuts short
a blocking call (sleep, a socket read), which a flag checked between Python
instructions would not. The lease watch's own thread blocks both signals so
that the kernel never hands it one meant for the job.
"""

from __future__ import annotations

import logging
import signal
import traceback
import threading
import time

from rq import get_current_job

from election import read_lease
from election.logfmt import log_event

from .claims import claim, claim_ttl, leave_ledger
from .context import RunContext, reset_current_run, set_current_run
from .entries import STOP, resolve
from .runs import record_run

log = logging.getLogger("baton.jobs")

# How often a running job re-reads the lease (one GET-sized script per period).
LEASE_WATCH_INTERVAL_S = 1.0


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


class _LeaseWatch(threading.Thread):
    def __init__(self, connection, prefix, site, token, entry, stop_job):
        super().__init__(daemon=True, name="baton-lease-watch")
        self.connection, self.prefix, self.site, self.token = connection, prefix, site, token
        self.entry, self.stop_job = entry, stop_job
        self.done = threading.Event()
        self.lost = False
        self.main_thread = threading.get_ident()  # built in the job's thread

    def run(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, {LEASE_LOST_SIGNAL, INTERRUPT_SIGNAL})
        while not self.done.wait(LEASE_WATCH_INTERVAL_S):
            try:
                record = read_lease(self.connection, self.prefix)
                still = record is not None and record.site == self.site and record.token == self.token
            except Exception:
                still = True  # can't tell: the elector's own deadline decides, not a blip here
            if not still and not self.lost:
                self.lost = True
                log_event(log, logging.WARNING, "lease_lost_mid_run", entry=self.entry, site=self.site,
                          token=self.token, policy="stop" if self.stop_job else "finish")
                if self.stop_job:
                    signal.pthread_kill(self.main_thread, LEASE_LOST_SIGNAL)
                return


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
    site, token = job.meta.get("baton_site"), job.meta.get("baton_token")
    started = time.time()
    lateness = started - tick
    if lateness > grace:
        leave_ledger(connection, prefix, tick_id)
        record_run(connection, prefix, entry_name, tick=tick, site=site, token=token, outcome="expired",
                   started_at=started, lateness_ms=round(lateness * 1000), duration_ms=0, job_id=job.id)
        log_event(log, logging.WARNING, "tick_expired", entry=entry_name, tick=tick, lateness_ms=round(lateness * 1000))
        return "expired"
    if not claim(connection, prefix, tick_id, f"{site}:{token}", claim_ttl(tick + grace, started)):
        log_event(log, logging.WARNING, "tick_duplicate", entry=entry_name, tick=tick, job_id=job.id)
        return "duplicate"
    func = resolve(func_path, f"schedule entry {entry_name!r}")
    log_event(log, logging.INFO, "job_start", entry=entry_name, site=site, token=token,
              lateness_ms=round(lateness * 1000), job_id=job.id)
    stop_job = on_lost_lease == STOP
    if stop_job:
        previous_handler = signal.signal(LEASE_LOST_SIGNAL, _raise_lease_lost)
    watch = _LeaseWatch(connection, prefix, site, token, entry_name, stop_job)
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
        record_run(connection, prefix, entry_name, tick=tick, site=site, token=token, outcome=outcome,
                   started_at=started, lateness_ms=round(lateness * 1000),
                   duration_ms=round(duration * 1000), job_id=job.id, error=error)
        log_event(log, logging.INFO if outcome == "succeeded" else logging.WARNING, "job_end", entry=entry_name,
                  site=site, token=token, outcome=outcome, duration_ms=round(duration * 1000),
                  **({"error": error.splitlines()[0]} if error else {}))
