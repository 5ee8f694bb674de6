"""What runs in the gunicorn master, once per dyno: the elector, the
leader-gated scheduler loop, the supervised embedded RQ worker, keep-awake,
and the shutdown sequence. HTTP workers read what it knows from a state file
it rewrites (role, Redis health, counters), so /healthz and /metrics need no
Redis connection; a step-down is asked through Redis (election's
request_step_down), which the elector honours at its next renewal.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from election import Callbacks, Elector, Lease
from election.logfmt import log_event
from workers.loader import load_schedule
from workers.scheduler import TickScheduler

from .settings import WebSettings

log = logging.getLogger("baton.web")

# How often the state file is rewritten even when nothing changed, so its age
# tells an HTTP worker whether the master is alive.
STATE_REFRESH_S = 1.0

# The embedded worker is restarted after a death, backing off from 1 s to 30 s
# so a worker that cannot start does not spin.
WORKER_RESTART_MIN_S, WORKER_RESTART_MAX_S = 1.0, 30.0


def _children(pid: int) -> list:
    """Child pids of ``pid`` (Linux /proc); used to see whether the RQ worker
    has a work horse, i.e. is running a job."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


class EmbeddedWorker:
    """``python -m workers worker`` as a child of the master, restarted if it dies.

    The gunicorn master reaps every child with waitpid(-1), so the exit status
    may be taken before Popen sees it; Popen then reports 0 (ECHILD). Either
    way poll() stops returning None, which is all the supervisor needs.
    """

    def __init__(self, site: str):
        self.site = site
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="baton-worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "workers", "worker"], start_new_session=False)
        log_event(log, logging.INFO, "worker_spawned", site=self.site, pid=self.proc.pid)

    def _supervise(self) -> None:
        delay = WORKER_RESTART_MIN_S
        while not self._stopping.wait(0.5):
            if self.proc.poll() is None:
                continue
            if self._stopping.is_set():
                return
            log_event(log, logging.WARNING, "worker_died", site=self.site, pid=self.proc.pid,
                      returncode=self.proc.returncode, restart_in_s=delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, WORKER_RESTART_MAX_S)
            self.restarts += 1
            self._spawn()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def busy(self) -> bool:
        return self.alive and bool(_children(self.proc.pid))

    def request_stop(self) -> None:
        """Warm shutdown: RQ finishes the running job, then exits. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.alive

    def force_stop(self) -> None:
        """Cold shutdown (SIGINT after the warm SIGTERM makes RQ kill the work
        horse; repeated SIGTERMs are ignored by design), then SIGKILL."""
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
            if not self.wait(2.0):
                self.proc.kill()
                self.wait(2.0)


class KeepAwake(threading.Thread):
    """Requests the site's own public URL every interval so an Eco dyno sees
    router traffic and does not sleep. Failures are logged, never fatal."""

    def __init__(self, url: str, interval: float, site: str, stopping: threading.Event):
        super().__init__(name="baton-keep-awake", daemon=True)
        self.url, self.interval, self.site, self.stopping = url, interval, site, stopping
        self.hits = 0

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    status = response.status
                self.hits += 1
                log_event(log, logging.INFO, "keep_awake", site=self.site, status=status,
                          ms=round((time.monotonic() - started) * 1000))
            except Exception as exc:
                log_event(log, logging.WARNING, "keep_awake_failed", site=self.site,
                          error=f"{type(exc).__name__}: {exc}")


class SiteRuntime:
    def __init__(self, settings: WebSettings):
        self.settings = settings
        core = settings.core
        self.site = core.identity.site
        self.entries = load_schedule(core.schedule_module)
        self.lease = Lease.from_url(core.redis_url, core.identity, core.election.ttl_ms, prefix=core.prefix,
                                    **core.redis_kwargs())
        self.scheduler = TickScheduler(core.redis_client("scheduler"), core.prefix, core.timezone, self.entries,
                                       is_leader=lambda: self.elector.is_leader, site=self.site)
        self.elector = Elector(self.lease, core.election, Callbacks(
            on_elected=self._on_elected, on_demoted=self._on_demoted, on_leader_changed=self._on_change))
        self.worker = EmbeddedWorker(self.site) if settings.embedded_worker else None
        self._stopping = threading.Event()
        self._shutdown_thread: threading.Thread | None = None
        # Re-entrant: request_shutdown also runs inside a signal handler.
        self._shutdown_lock = threading.RLock()
        self.keep_awake = (KeepAwake(settings.keep_awake_url, settings.keep_awake_interval, self.site, self._stopping)
                           if settings.keep_awake_url else None)
        self.state_path = os.path.join(tempfile.gettempdir(), f"baton-state-{os.getpid()}.json")
        self.started_at = time.time()

    # election callbacks ---------------------------------------------------------

    def _on_elected(self, token: int) -> None:
        self.scheduler.on_elected(token)
        self.write_state()

    def _on_demoted(self, reason: str) -> None:
        self.scheduler.on_demoted(reason)
        self.write_state()

    def _on_change(self, _record) -> None:
        self.write_state()

    # lifecycle --------------------------------------------------------------------

    def publish_state_file(self) -> None:
        """Before gunicorn forks its HTTP workers: they find the file through
        the environment they inherit."""
        os.environ["BATON_STATE_FILE"] = self.state_path
        self.write_state()

    def start(self) -> None:
        """Start the threads (the port is already bound)."""
        self.scheduler.start()
        self.elector.start()
        if self.worker:
            self.worker.start()
        if self.keep_awake:
            self.keep_awake.start()
        threading.Thread(target=self._state_loop, name="baton-state", daemon=True).start()
        log_event(log, logging.INFO, "boot", site=self.site, holder=self.lease.identity.holder,
                  entries=len(self.entries), embedded_worker=bool(self.worker),
                  keep_awake=bool(self.keep_awake))

    def request_shutdown(self, handed_over=None) -> None:
        """Start the shutdown sequence; ``handed_over()`` runs once the lease is
        released (gunicorn's own stop is chained there, so its HTTP workers keep
        serving while a job finishes and do not compete with the handoff).
        Idempotent: repeated SIGTERMs change nothing."""
        with self._shutdown_lock:
            if self._shutdown_thread is None:
                self._shutdown_thread = threading.Thread(
                    target=self._shutdown, args=(handed_over,), name="baton-shutdown", daemon=True)
                self._shutdown_thread.start()

    def wait_for_shutdown(self, timeout: float) -> None:
        self.request_shutdown()
        self._shutdown_thread.join(timeout)

    def _shutdown(self, handed_over) -> None:
        started = time.monotonic()
        busy = False
        try:
            log_event(log, logging.INFO, "shutdown", site=self.site, leader=self.elector.is_leader)
            self._stopping.set()
            self.scheduler.stop()  # 1. stop enqueuing
            busy = bool(self.worker and self.worker.busy())
            if busy:
                self.worker.request_stop()  # 2. no new job; the running one may finish...
                if not self.worker.wait(self.settings.shutdown_grace):  # ...within the grace
                    log_event(log, logging.WARNING, "job_stopped_at_grace", site=self.site,
                              grace_s=self.settings.shutdown_grace)
                    self.worker.force_stop()
            # 3. release: followers wake at once. With no job running this comes
            # first; a job the idle worker might still pick up is put back by
            # its lease check, since this site no longer holds the lease.
            self.elector.stop()
            log_event(log, logging.INFO, "handed_over", site=self.site, job_was_running=busy,
                      ms=round((time.monotonic() - started) * 1000))
        finally:
            if handed_over is not None:
                handed_over()
        if self.worker:
            self.worker.request_stop()
            if not self.worker.wait(5.0):
                self.worker.force_stop()
        self.write_state()

    # channels to the HTTP workers -------------------------------------------------

    def state(self) -> dict:
        elector = self.elector
        leader = elector.leader
        return {
            "site": self.site,
            "holder": self.lease.identity.holder,
            "role": "leader" if elector.is_leader else "follower",
            "token": elector.token,
            "redis_ok": elector.redis_ok,
            "leader_site": leader.site if leader else None,
            "stopping": self._stopping.is_set(),
            "counters": dict(elector.counters),
            "worker": {"embedded": bool(self.worker), "alive": bool(self.worker and self.worker.alive),
                       "restarts": self.worker.restarts if self.worker else 0},
            "keep_awake_hits": self.keep_awake.hits if self.keep_awake else 0,
            "written_at": time.time(),
            "started_at": self.started_at,
        }

    def write_state(self) -> None:
        tmp = f"{self.state_path}.tmp{threading.get_ident()}"
        with open(tmp, "w") as f:
            json.dump(self.state(), f)
        os.replace(tmp, self.state_path)

    def _state_loop(self) -> None:
        while not self._stopping.wait(STATE_REFRESH_S):
            try:
                self.write_state()
            except OSError as exc:
                log_event(log, logging.WARNING, "state_write_failed", error=str(exc))
