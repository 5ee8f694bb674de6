"""The site's RQ workers as children of the gunicorn master, restarted if
they die: ``BATON_WORKER_CONCURRENCY`` processes, so that many jobs run at
once.

Each ``python -m workers worker`` runs in a process of its own (RQ forks a
work horse per job, which a multithreaded gunicorn master must not do
itself), forked by a supervisor thread of its own that lives exactly as long
as it does: the worker asks the kernel for SIGHUP when the *thread* that
forked it ends (workers/parent_death.py), so it learns of the master's death
however the master dies — ``kill -9`` included — and never outlives it.

The gunicorn master reaps every child with waitpid(-1), so the exit status
may be taken before Popen sees it; Popen then reports 0 (ECHILD). Either way
``wait()`` returns once the worker is gone, which is all the supervisor needs.

The supervision itself is workers/pool.py's, shared with a worker dyno's
``python -m workers worker``.
"""

from __future__ import annotations

import logging

from workers.pool import WorkerPool

log = logging.getLogger("baton.web")


class EmbeddedWorker(WorkerPool):
    """``concurrency`` worker processes of the master's site (WorkerPool:
    ``alive`` is "at least one", ``processes_alive`` how many). One runs
    always; the others only while the site leads (the master's elector
    callbacks call ``lead``): a following web dyno holds the connections of
    one worker, whatever the concurrency."""

    def __init__(self, site: str, concurrency: int = 1):
        super().__init__(site, concurrency, logger=log, standing=1)
