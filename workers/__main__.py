"""``python -m workers [worker|scheduler|check]``

- ``worker`` (default): the leader-gated RQ worker for this site's queues;
  with ``BATON_WORKER_CONCURRENCY`` > 1, that many of them, as children of
  this process (workers/pool.py), so that many jobs run at once.
- ``scheduler``: an elector plus the leader-gated scheduler loop, for running
  the schedule without the web process.
- ``check``: validate the configuration and the schedule, then exit (0 if fine).
A configuration or schedule mistake exits 2 with one line naming it.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time

from redis.exceptions import RedisError

from election import Callbacks, Elector
from election.logfmt import configure_stdout_logging, log_event
from election.backoff import Backoff
from election.outage import OutageLog

from .entries import ScheduleError, rq_queue_name
from .loader import load_schedule
from .parent_death import die_with_parent
from .settings import ConfigError, Settings
from .shutdown import RELEASE_S, exit_without_stop_signals

log = logging.getLogger("baton.workers")

# While Redis does not answer, a starting worker asks again this often: it
# starts within this of Redis coming back.
WAIT_FOR_REDIS_S = 0.5

# A worker generation that ends on an error (a Redis that refuses writes for
# want of memory fails every start at once) is followed by the next one after
# a delay that doubles from WAIT_FOR_REDIS_S up to this; one that ran this
# long counts as healthy and resets the delay.
RESTART_DELAY_MAX_S = 5.0
HEALTHY_GENERATION_S = 30.0


def run_worker(settings: Settings, entries) -> int:
    """The leader-gated RQ worker, until a stop signal (worker.py); with
    ``BATON_WORKER_CONCURRENCY`` > 1, a supervisor of that many (run_worker_pool).

    Redis trouble never ends the process: before a worker starts, Redis must
    answer (RQ registers the worker at once); if RQ's loop quits on a Redis
    error all the same (it does, mid-job), a new worker takes over in this
    process. An embedded worker (``BATON_PARENT_PID``, set by the gunicorn
    master) dies with its master."""
    if settings.worker_concurrency > 1:
        return run_worker_pool(settings)
    from .worker import SOCKET_TIMEOUT_S, LeaderGatedWorker

    queues = sorted({rq_queue_name(settings.prefix, entry.queue) for entry in entries}) or [
        rq_queue_name(settings.prefix, "baton")
    ]
    identity = settings.identity
    parent = int(os.environ["BATON_PARENT_PID"]) if os.environ.get("BATON_PARENT_PID") else None
    _exit_on_stop_signals()
    if parent is not None and not die_with_parent(signal.SIGHUP, parent):
        log_event(log, logging.WARNING, "master_gone", site=identity.site, parent=parent, action="not starting")
        return 0
    configure_stdout_logging(logging.WARNING, name="rq")  # RQ's own lines as logfmt, no tracebacks
    connection = settings.redis_client("worker", socket_timeout=SOCKET_TIMEOUT_S)
    outage = OutageLog(log, identity.site, "worker")
    name = f"{settings.prefix}-{identity.site}-{identity.dyno}-{identity.boot}"
    restart_delay = Backoff(WAIT_FOR_REDIS_S, RESTART_DELAY_MAX_S)
    for generation in itertools.count():
        _exit_on_stop_signals()
        while True:
            try:
                connection.ping()  # answers in a full Redis too: recovery is told by a generation that lasts
                break
            except RedisError as exc:
                outage.failed(exc)
                time.sleep(WAIT_FOR_REDIS_S)
        started = time.monotonic()
        worker = LeaderGatedWorker(
            queues, connection=connection, name=name if generation == 0 else f"{name}-{generation}",
            site=identity.site, prefix=settings.prefix, shutdown_grace=settings.shutdown_grace,
            site_check_s=settings.election.follower_wait_max, watch_parent=parent,
            renew_deadline=settings.election.renew_deadline, alerts=settings.alerts,
            replicas_ack=settings.replicas_ack, replica_ack_timeout=settings.replica_ack_timeout,
        )
        if generation == 0:
            log_event(log, logging.INFO, "worker_start", site=identity.site, queues=",".join(queues))
        try:
            worker.work(logging_level="WARNING")
        except RedisError as exc:  # RQ's teardown, after its loop quit on one
            outage.failed(exc)
        if worker.stopping:
            log_event(log, logging.INFO, "worker_exit", site=identity.site)
            return 0
        if time.monotonic() - started >= HEALTHY_GENERATION_S:
            restart_delay.reset()
            outage.succeeded()
        delay = restart_delay.next()
        log_event(log, logging.WARNING, "worker_restarting", site=identity.site, generation=generation + 1,
                  reason="RQ's loop quit on an error (see the line before)", in_s=round(delay, 2))
        time.sleep(delay)


def run_worker_pool(settings: Settings) -> int:
    """A worker dyno with ``BATON_WORKER_CONCURRENCY`` > 1: that many worker
    processes (each ``python -m workers worker`` with a concurrency of 1),
    restarted if they die, each dying with this process (workers/pool.py).

    A stop (SIGTERM or SIGINT — Heroku's dyno stop also signals every child
    directly; repeats change nothing) is passed on to every worker as
    SIGTERM; each lets its running job finish within the grace and exits.
    This process waits for all of them — it must outlive them, or they
    would take its death for the master's and stop with no grace — and
    SIGKILLs any still there past their own deadline, then exits 0."""
    from .pool import WORKER_KILL_SLACK_S, WorkerPool
    from .shutdown import StopPlan

    identity = settings.identity
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    parent = int(os.environ["BATON_PARENT_PID"]) if os.environ.get("BATON_PARENT_PID") else None
    if parent is not None:
        # Started by a parent of its own: gone with it at once; the workers
        # then see this process die and stop with no grace, as they would.
        signal.signal(signal.SIGHUP, lambda _signum, _frame: os._exit(0))
        if not die_with_parent(signal.SIGHUP, parent):
            return 0
    pool = WorkerPool(identity.site, settings.worker_concurrency)
    pool.start()
    log_event(log, logging.INFO, "worker_pool_start", site=identity.site, processes=pool.count)
    while not stop.wait(1.0):
        pass
    plan = StopPlan(settings.shutdown_grace)
    pool.request_stop()
    busy = pool.busy()
    log_event(log, logging.INFO, "worker_pool_stopping", site=identity.site, job_running=busy,
              processes_alive=pool.processes_alive)
    deadline = (plan if busy else StopPlan(0.0, plan.started)).worker_gone_by + WORKER_KILL_SLACK_S
    if not pool.wait(plan.left(deadline)):
        log_event(log, logging.ERROR, "worker_killed", site=identity.site,
                  reason="still running past the stop's deadline")
        pool.kill()
    log_event(log, logging.INFO, "worker_pool_exit", site=identity.site, restarts=pool.restarts)
    return 0


def _exit_on_stop_signals() -> None:
    """Until a worker's work loop installs RQ's handlers, no job runs: a stop
    signal (or the master's death, SIGHUP) just ends the process."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _signum, _frame: sys.exit(0))


def run_scheduler(settings: Settings, entries) -> int:
    from .scheduler import CONNECTION_TURN_WAIT_S, TickScheduler
    from .sites import SitePresence
    from .watchdog import Watchdog

    identity = settings.identity
    lease = settings.lease()
    holder = {}
    done = threading.Event()
    scheduler = TickScheduler(settings.shared_redis_client("scheduler", CONNECTION_TURN_WAIT_S), settings.prefix,
                              settings.timezone, entries,
                              is_leader=lambda: holder["elector"].is_leader, site=identity.site,
                              alerts=settings.alerts)
    watchdog = Watchdog(scheduler.connection, settings.prefix, entries, settings.timezone, site=identity.site,
                        holder=identity.holder, renew_deadline=settings.election.renew_deadline,
                        alerts=settings.alerts, leading=lambda: holder["elector"].is_leader)
    presence = SitePresence(scheduler.connection, settings.prefix, identity.site, identity.holder,
                            describe=lambda: {"role": "leader" if holder["elector"].is_leader else "follower",
                                              "process": "scheduler", "embedded_worker": False,
                                              "ready": holder["elector"].ready,
                                              "ready_elsewhere": holder["elector"].ready_elsewhere,
                                              "stopping": done.is_set()},
                            leading=lambda: holder["elector"].is_leader)

    def on_elected(token):
        scheduler.on_elected(token)
        presence.changed()

    def on_demoted(reason):
        scheduler.on_demoted(reason)
        presence.changed()

    elector = Elector(lease, settings.election, Callbacks(on_elected=on_elected, on_demoted=on_demoted,
                                                          on_readiness_changed=lambda *_: presence.changed()))
    holder["elector"] = elector
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    scheduler.start()
    elector.start()
    watchdog.start()
    presence.start()
    log_event(log, logging.INFO, "scheduler_start", site=identity.site, holder=identity.holder,
              entries=len(entries), timezone=settings.timezone.key)
    done.wait()
    # Stop enqueuing first, then hand the lease over (followers wake at once).
    watchdog.stop()
    scheduler.stop()
    elector.stop()
    presence.stop(wait=RELEASE_S)  # its last write says "stopping"; the lease is handed over already
    log_event(log, logging.INFO, "scheduler_stopped", site=identity.site)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "worker"
    configure_stdout_logging()
    try:
        settings = Settings.from_env()
        entries = load_schedule(settings.schedule_module)
        if command != "check" and not os.environ.get("BATON_PARENT_PID"):
            # A worker its site's master or worker pool started (and restarts)
            # skips it: the parent looked once, at its own start.
            settings.refuse_cluster()
    except (ConfigError, ScheduleError) as exc:
        print(f"baton: {exc}", file=sys.stderr)
        return 2
    if command == "check":
        log_event(log, logging.INFO, "config_ok", entries=len(entries), timezone=settings.timezone.key)
        return 0
    if command in ("scheduler", "worker"):
        code = (run_scheduler if command == "scheduler" else run_worker)(settings, entries)
        exit_without_stop_signals()
        return code
    print(f"baton: unknown command {command!r}; use worker, scheduler or check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
