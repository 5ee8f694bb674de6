"""A site's RQ worker processes — ``BATON_WORKER_CONCURRENCY`` of them, so
that many jobs run at once — each restarted if it dies.

One supervisor, used in two places:
- the gunicorn master (app/embedded_worker.py): the embedded workers of a
  web dyno;
- ``python -m workers worker`` when ``BATON_WORKER_CONCURRENCY`` > 1 (a
  worker dyno; workers/__main__.py): the command supervises its children
  instead of being the worker itself.

Each child is ``python -m workers worker`` with ``BATON_WORKER_CONCURRENCY=1``
(one leader-gated RQ worker: one job at a time, in a work horse it forks;
each process draws its own random boot id, so its RQ worker name is unique)
and ``BATON_PARENT_PID`` set to this process. Each is forked by a
supervising thread of its own that then lives exactly as long as it does:
the worker asks the kernel for SIGHUP when the *thread* that forked it ends
(workers/parent_death.py), so it learns of its parent's death however the
parent dies — ``kill -9`` included — and never outlives it. One thread for
all the children would do for that only as long as that thread lives; one
per child keeps each child's restart independent of the others' too.

**Extra workers run only while the site leads** (``standing`` < ``count``:
the embedded pool). A worker that waits for its site to lead costs Redis two
connections (its own and its election feed) and does nothing, and Heroku's
Mini plan has 20 connections for every site together. So the first
``standing`` workers always run — one is ready the moment the site is
elected — and the others are started when the site is elected (``lead(True)``)
and stopped once idle after it is demoted (``lead(False)``): a job one of them
runs when the lease goes finishes (or stops) under its entry's
on_lost_lease, as on any worker. A following site costs what a site with
one worker costs; the leading site one connection per extra worker, and one
more per extra job running.

The gunicorn master reaps every child with waitpid(-1), so a child's exit
status may be taken before Popen sees it; Popen then reports 0 (ECHILD).
Either way ``wait()`` returns once the child is gone, which is all a
supervising thread needs.
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

log = logging.getLogger("baton.workers")

# A worker that dies is restarted after a delay that doubles from 1 s to
# 30 s while it keeps dying, so one that cannot start does not spin...
WORKER_RESTART_MIN_S, WORKER_RESTART_MAX_S = 1.0, 30.0

# ...and drops back to 1 s once a worker has run this long: a blip long ago
# must not slow the next restart.
WORKER_HEALTHY_S = 60.0

# A stopping parent SIGKILLs its workers this long after their own deadline
# (workers/shutdown.py: StopPlan.worker_gone_by): each worker ends itself
# first (workers/worker.py) whenever it can.
WORKER_KILL_SLACK_S = 0.5

# How often a demoted site looks for extra workers gone idle, to stop them.
RETIRE_CHECK_S = 0.5


def children(pid: int) -> list:
    """Child pids of ``pid`` (Linux /proc): an RQ worker's work horse, while
    it runs a job."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


class RestartDelay:
    """How long to wait before restarting a worker that died: from
    WORKER_RESTART_MIN_S, doubling up to WORKER_RESTART_MAX_S while it keeps
    dying, and from the minimum again once a worker has run WORKER_HEALTHY_S
    (a blip long ago must not slow the next restart)."""

    def __init__(self):
        self._next = WORKER_RESTART_MIN_S

    def after_death(self, ran_for_s: float) -> float:
        if ran_for_s >= WORKER_HEALTHY_S:
            self._next = WORKER_RESTART_MIN_S
        delay, self._next = self._next, min(self._next * 2, WORKER_RESTART_MAX_S)
        return delay


class _Slot:
    """One worker process and the thread that supervises it."""

    def __init__(self, index: int, standing: bool):
        self.index = index
        self.standing = standing  # runs whether or not the site leads
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.retired = False  # stopped on purpose (the site no longer leads), not died
        self.thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        proc = self.proc
        return proc is not None and proc.poll() is None

    @property
    def busy(self) -> bool:
        """A job is running: the worker has a work horse."""
        proc = self.proc
        return proc is not None and proc.poll() is None and bool(children(proc.pid))


class WorkerPool:
    """``count`` worker processes of ``site`` (see the module docstring).
    ``busy()``: any of them runs a job; ``wait_idle``: none does; ``wait``:
    all have exited; ``kill``: all of them and their work horses; ``alive``:
    at least one is running, ``processes_alive``: how many."""

    def __init__(self, site: str, count: int, logger: logging.Logger | None = None, standing: int | None = None):
        if count < 1:
            raise ValueError(f"a worker pool needs at least one process, not {count}")
        self.site = site
        self.count = count
        self.standing = count if standing is None else max(1, min(standing, count))
        self._log = logger or log
        self._slots = [_Slot(i, i < self.standing) for i in range(count)]
        self._stopping = threading.Event()
        self._leading = threading.Event()
        self._lead_changed = threading.Condition()
        # A spawn and a stop never interleave: a worker forked while a stop
        # is requested would miss its SIGTERM.
        self._lock = threading.Lock()

    def start(self) -> None:
        for slot in self._slots:
            slot.thread = threading.Thread(target=self._supervise, args=(slot,),
                                           name=f"baton-worker-supervisor-{slot.index}", daemon=True)
            slot.thread.start()
        if self.standing < self.count:
            threading.Thread(target=self._retire_idle, name="baton-worker-retire", daemon=True).start()

    def lead(self, leading: bool) -> None:
        """The site was elected (True) or demoted (False): start the extra
        workers, or stop them once idle (see the module docstring)."""
        with self._lead_changed:
            if leading:
                self._leading.set()
            else:
                self._leading.clear()
            self._lead_changed.notify_all()

    def _wait_to_lead(self) -> bool:
        """An extra worker's slot, until the site leads; False on a stop."""
        with self._lead_changed:
            while not self._leading.is_set() and not self._stopping.is_set():
                self._lead_changed.wait()
        return not self._stopping.is_set()

    def _retire_idle(self) -> None:
        while not self._stopping.wait(RETIRE_CHECK_S):
            if self._leading.is_set():
                continue
            for slot in self._slots:
                if not slot.standing and slot.alive and not slot.retired and not slot.busy:
                    with self._lock:
                        if self._stopping.is_set() or self._leading.is_set():
                            break
                        slot.retired = True
                        try:
                            slot.proc.send_signal(signal.SIGTERM)
                        except ProcessLookupError:
                            pass
                    log_event(self._log, logging.INFO, "worker_retired", site=self.site, pid=slot.proc.pid,
                              slot=slot.index, reason="the site no longer leads")
    def _spawn(self, slot: _Slot) -> subprocess.Popen | None:
        env = {**os.environ, "BATON_PARENT_PID": str(os.getpid()), "BATON_WORKER_CONCURRENCY": "1"}
        with self._lock:
            if self._stopping.is_set():
                return None
            slot.proc = subprocess.Popen([sys.executable, "-m", "workers", "worker"], env=env)
        log_event(self._log, logging.INFO, "worker_spawned", site=self.site, pid=slot.proc.pid, slot=slot.index,
                  of=self.count)
        return slot.proc

    def _supervise(self, slot: _Slot) -> None:
        """Runs on the slot's own thread, which forks the worker (see the module docstring)."""
        delays = RestartDelay()
        while not self._stopping.is_set():
            if not slot.standing and not self._wait_to_lead():
                return
            proc = self._spawn(slot)
            if proc is None:
                return
            started = time.monotonic()
            proc.wait()
            if self._stopping.is_set():
                return
            if slot.retired:
                slot.retired = False
                continue
            delay = delays.after_death(time.monotonic() - started)
            log_event(self._log, logging.WARNING, "worker_died", site=self.site, pid=proc.pid, slot=slot.index,
                      returncode=proc.returncode, restart_in_s=delay)
            if self._stopping.wait(delay):
                return
            slot.restarts += 1

    # -- what the parent reads ------------------------------------------------

    @property
    def alive(self) -> bool:
        """At least one worker process is running."""
        return any(slot.alive for slot in self._slots)

    @property
    def processes_alive(self) -> int:
        return sum(slot.alive for slot in self._slots)

    @property
    def pids(self) -> list:
        """The running worker processes."""
        return [slot.proc.pid for slot in self._slots if slot.alive]

    @property
    def restarts(self) -> int:
        return sum(slot.restarts for slot in self._slots)

    def busy(self) -> bool:
        """Whether any worker runs a job."""
        return any(slot.busy for slot in self._slots)

    # -- stopping ---------------------------------------------------------------

    def request_stop(self) -> None:
        """No restart from now on, and SIGTERM to every worker: each lets its
        running job finish within the grace, then exits (workers/worker.py).
        Idempotent, like the workers' own handling of repeated SIGTERMs."""
        with self._lock:
            self._stopping.set()
        with self._lead_changed:
            self._lead_changed.notify_all()
        for slot in self._slots:
            if slot.alive:
                try:
                    slot.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def wait(self, timeout: float) -> bool:
        """Until every worker has exited; False if one still runs after ``timeout``."""
        return self._wait(lambda: not self.alive, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Until no job runs (every work horse has ended, its run recorded) or the workers have exited."""
        return self._wait(lambda: not self.busy(), timeout)

    @staticmethod
    def _wait(done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.005)
        return done()

    def kill(self) -> None:
        """SIGKILL every worker and its work horse (the last resort of a stop
        whose deadline passed)."""
        for slot in self._slots:
            if slot.alive:
                for pid in [*children(slot.proc.pid), slot.proc.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.wait(2.0)
