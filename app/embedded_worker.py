"""The site's RQ worker as a child of the gunicorn master, restarted if it dies.

``python -m workers worker`` runs in a process of its own (RQ forks a work
horse per job, which a multithreaded gunicorn master must not do itself).
Its supervisor thread forks it and then lives exactly as long as it does:
the worker asks the kernel for SIGHUP when the *thread* that forked it ends
(workers/parent_death.py), so it learns of the master's death however the
master dies — ``kill -9`` included — and never outlives it.

The gunicorn master reaps every child with waitpid(-1), so the exit status
may be taken before Popen sees it; Popen then reports 0 (ECHILD). Either way
``wait()`` returns once the worker is gone, which is all the supervisor needs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from election.logfmt import log_event

log = logging.getLogger("baton.web")

# A worker that dies is restarted after a delay that doubles from 1 s to
# 30 s while it keeps dying, so one that cannot start does not spin...
WORKER_RESTART_MIN_S, WORKER_RESTART_MAX_S = 1.0, 30.0

# ...and drops back to 1 s once a worker has run this long: a blip long ago
# must not slow the next restart.
WORKER_HEALTHY_S = 60.0


def children(pid: int) -> list:
    """Child pids of ``pid`` (Linux /proc): the RQ worker's work horse, while
    it runs a job."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


class EmbeddedWorker:
    def __init__(self, site: str):
        self.site = site
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="baton-worker-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> None:
        env = {**os.environ, "BATON_PARENT_PID": str(os.getpid())}
        self.proc = subprocess.Popen([sys.executable, "-m", "workers", "worker"], env=env)
        log_event(log, logging.INFO, "worker_spawned", site=self.site, pid=self.proc.pid)

    def _supervise(self) -> None:
        delay = WORKER_RESTART_MIN_S
        while not self._stopping.is_set():
            self._spawn()
            started = time.monotonic()
            self.proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= WORKER_HEALTHY_S:
                delay = WORKER_RESTART_MIN_S
            log_event(log, logging.WARNING, "worker_died", site=self.site, pid=self.proc.pid,
                      returncode=self.proc.returncode, restart_in_s=delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, WORKER_RESTART_MAX_S)
            self.restarts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def busy(self) -> bool:
        """Whether a job is running (the worker has a work horse)."""
        return self.alive and bool(children(self.proc.pid))

    def request_stop(self) -> None:
        """No restart from now on, and SIGTERM to the worker: it lets a
        running job finish within the grace, then exits (workers/worker.py).
        Idempotent, like the worker's own handling of repeated SIGTERMs."""
        self._stopping.set()
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        """Until the worker has exited; False if it is still running after ``timeout``."""
        return self._wait(lambda: not self.alive, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Until no job runs (the work horse has ended, its run recorded) or the worker has exited."""
        return self._wait(lambda: not self.busy(), timeout)

    @staticmethod
    def _wait(done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.005)
        return done()

    def kill(self) -> None:
        """SIGKILL the worker and its work horse (the last resort of a stop
        whose deadline passed)."""
        if self.alive:
            for pid in [*children(self.proc.pid), self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.wait(2.0)
