"""``python -m workers [worker|scheduler|check]``

- ``worker`` (default): the leader-gated RQ worker for this site's queues.
- ``scheduler``: an elector plus the leader-gated scheduler loop, for running
  the schedule without the web process.
- ``check``: validate the configuration and the schedule, then exit (0 if fine).
A configuration or schedule mistake exits 2 with one line naming it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from election import Callbacks, Elector, Lease
from election.logfmt import configure_stdout_logging, log_event

from .entries import ScheduleError, rq_queue_name
from .loader import load_schedule
from .settings import ConfigError, Settings

log = logging.getLogger("baton.workers")




def run_worker(settings: Settings, entries) -> int:
    from .worker import LeaderGatedWorker

    queues = sorted({rq_queue_name(settings.prefix, entry.queue) for entry in entries}) or [
        rq_queue_name(settings.prefix, "baton")
    ]
    connection = settings.redis_client("worker")
    identity = settings.identity
    worker = LeaderGatedWorker(
        queues, connection=connection, name=f"{settings.prefix}-{identity.site}-{identity.dyno}-{identity.boot}"
    )
    worker.baton_site = identity.site
    worker.baton_prefix = settings.prefix
    log_event(log, logging.INFO, "worker_start", site=identity.site, queues=",".join(queues))
    worker.work(logging_level="WARNING")
    return 0


def run_scheduler(settings: Settings, entries) -> int:
    from .scheduler import TickScheduler

    identity = settings.identity
    lease = Lease.from_url(settings.redis_url, identity, settings.election.ttl_ms, prefix=settings.prefix,
                           **settings.redis_kwargs())
    holder = {}
    scheduler = TickScheduler(settings.redis_client("scheduler"), settings.prefix, settings.timezone, entries,
                              is_leader=lambda: holder["elector"].is_leader, site=identity.site)
    elector = Elector(lease, settings.election,
                      Callbacks(on_elected=scheduler.on_elected, on_demoted=scheduler.on_demoted))
    holder["elector"] = elector
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    scheduler.start()
    elector.start()
    log_event(log, logging.INFO, "scheduler_start", site=identity.site, holder=identity.holder,
              entries=len(entries), timezone=settings.timezone.key)
    done.wait()
    # Stop enqueuing first, then hand the lease over (followers wake at once).
    scheduler.stop()
    elector.stop()
    log_event(log, logging.INFO, "scheduler_stopped", site=identity.site)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "worker"
    configure_stdout_logging()
    try:
        settings = Settings.from_env()
        entries = load_schedule(settings.schedule_module)
    except (ConfigError, ScheduleError) as exc:
        print(f"baton: {exc}", file=sys.stderr)
        return 2
    if command == "check":
        log_event(log, logging.INFO, "config_ok", entries=len(entries), timezone=settings.timezone.key)
        return 0
    if command == "scheduler":
        return run_scheduler(settings, entries)
    if command == "worker":
        return run_worker(settings, entries)
    print(f"baton: unknown command {command!r}; use worker, scheduler or check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
