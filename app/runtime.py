"""What runs in the gunicorn master, once per dyno: the elector, the
leader-gated scheduler loop, the supervised embedded RQ worker, keep-awake,
and the shutdown sequence (its timeline: workers/shutdown.py). HTTP workers
read what it knows from a state file it rewrites (role, Redis health,
counters), so /healthz and /metrics need no Redis connection; a step-down is
asked through Redis (election's request_step_down), which the elector
honours at its next renewal.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time

from election import Callbacks, Elector
from election.logfmt import log_event
from workers.loader import load_schedule
from workers.pool import WORKER_KILL_SLACK_S  # the master SIGKILLs its workers this long after their own deadline
from workers.scheduler import CONNECTION_TURN_WAIT_S, TickScheduler
from workers.sites import SitePresence
from workers.watchdog import Watchdog
from workers.shutdown import HTTP_STOP_S, RELEASE_S, StopPlan

from .embedded_worker import EmbeddedWorker
from .keep_awake import KeepAwake
from .settings import WebSettings

log = logging.getLogger("baton.web")

# How often the state file is rewritten even when nothing changed, so its age
# tells an HTTP worker whether the master is alive. Never less often than
# twice per (renew_deadline - renew_interval) either (state_refresh_s): a
# leader's file says "leader" only until its term's deadline (leader_until),
# which is at least that far ahead when written, so a live leader's file never
# reads as expired between two writes.
STATE_REFRESH_S = 1.0


def state_refresh_s(election) -> float:
    return min(STATE_REFRESH_S, (election.renew_deadline - election.renew_interval) / 2)

# How long a stop waits, after the release, for the scheduler loop's thread
# to end (the demotion before the release already stopped its enqueuing).
# Its Redis calls are never cut short: with Redis frozen, this bounds them.
SCHEDULER_STOP_S = 0.5


class SiteRuntime:
    def __init__(self, settings: WebSettings):
        self.settings = settings
        core = settings.core
        self.site = core.identity.site
        self.entries = load_schedule(core.schedule_module)
        self.lease = core.lease()
        self.scheduler = TickScheduler(core.shared_redis_client("scheduler", CONNECTION_TURN_WAIT_S), core.prefix,
                                       core.timezone, self.entries, is_leader=lambda: self.elector.is_leader,
                                       site=self.site, alerts=core.alerts)
        self.elector = Elector(self.lease, core.election, Callbacks(
            on_elected=self._on_elected, on_demoted=self._on_demoted, on_leader_changed=self._on_change,
            on_readiness_changed=self._on_readiness_changed))
        # Every site watches the leader (only where alerts are configured), on
        # the scheduler's connection: a following site's is otherwise closed.
        self.watchdog = Watchdog(self.scheduler.connection, core.prefix, self.entries, core.timezone, site=self.site,
                                 holder=self.lease.identity.holder, renew_deadline=core.election.renew_deadline,
                                 alerts=core.alerts, leading=lambda: self.elector.is_leader)
        self.presence = SitePresence(self.scheduler.connection, core.prefix, self.site, self.lease.identity.holder,
                                     describe=self._describe, leading=lambda: self.elector.is_leader)
        self.worker = EmbeddedWorker(self.site, core.worker_concurrency) if settings.embedded_worker else None
        self._stopping = threading.Event()
        self._stop_plan: StopPlan | None = None
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
        if self.worker:
            self.worker.lead(True)
        self.presence.changed()
        self.write_state()

    def _on_demoted(self, reason: str) -> None:
        self.scheduler.on_demoted(reason)
        if self.worker:
            self.worker.lead(False)
        self.presence.changed()
        self.write_state()

    def _on_readiness_changed(self, _ready: bool, _ready_elsewhere: bool) -> None:
        self.presence.changed()
        self.write_state()

    def _describe(self) -> dict:
        """This site as the all-sites view shows it (workers/sites.py)."""
        core = self.settings.core
        return {"role": "leader" if self.elector.is_leader else "follower", "process": "web",
                "embedded_worker": bool(self.worker), "worker_concurrency": core.worker_concurrency,
                "workers_alive": self.worker.processes_alive if self.worker else 0,
                "ready": self.elector.ready, "ready_elsewhere": self.elector.ready_elsewhere,
                "stopping": self._stopping.is_set()}

    def _on_change(self, _record) -> None:
        self.write_state()

    # lifecycle --------------------------------------------------------------------

    def publish_state_file(self) -> None:
        """Before gunicorn forks its HTTP workers: they find the file through
        the environment they inherit."""
        os.environ["BATON_STATE_FILE"] = self.state_path
        self.write_state()

    def start(self) -> None:
        """Start the threads (the port is already bound). Nothing starts once
        a shutdown has begun: a SIGTERM during boot leaves no worker behind."""
        with self._shutdown_lock:
            if self._stopping.is_set():
                return
            self.scheduler.start()
            self.elector.start()
            self.watchdog.start()
            self.presence.start()
            if self.worker:
                self.worker.start()
            if self.keep_awake:
                self.keep_awake.start()
            threading.Thread(target=self._state_loop, name="baton-state", daemon=True).start()
        log_event(log, logging.INFO, "boot", site=self.site, holder=self.lease.identity.holder,
                  entries=len(self.entries), embedded_worker=bool(self.worker),
                  worker_concurrency=self.settings.core.worker_concurrency, keep_awake=bool(self.keep_awake))

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_shutdown(self, handed_over=None) -> None:
        """Start the shutdown sequence; ``handed_over()`` runs once the lease is
        released (gunicorn's own stop is chained there, so it does not compete
        with the handoff). Idempotent: repeated SIGTERMs change nothing; the
        deadlines count from the first."""
        with self._shutdown_lock:
            if self._shutdown_thread is None:
                self._stopping.set()
                self._stop_plan = StopPlan(self.settings.core.shutdown_grace)
                self._shutdown_thread = threading.Thread(
                    target=self._shutdown, args=(self._stop_plan, handed_over), name="baton-shutdown", daemon=True)
                self._shutdown_thread.start()

    def wait_for_shutdown(self) -> None:
        """Until the shutdown is done, or the platform's deadline is near."""
        self.request_shutdown()
        self._shutdown_thread.join(self._stop_plan.left(self._stop_plan.exit_by))

    def _shutdown(self, plan: StopPlan, handed_over) -> None:
        worker = self.worker
        busy = False
        worker_deadline = plan.worker_gone_by + WORKER_KILL_SLACK_S
        try:
            log_event(log, logging.INFO, "shutdown", site=self.site, leader=self.elector.is_leader)
            self.presence.changed()  # says "stopping" (its own thread: never waited for)
            if worker:
                worker.request_stop()  # 1. every worker: no new job; a running one may finish within the grace
            busy = bool(worker and worker.busy())  # any of the workers runs a job
            # Each worker ends itself by then (its own stop: workers/worker.py);
            # past it, the master kills them.
            worker_deadline = (plan if busy else StopPlan(0.0, plan.started)).worker_gone_by + WORKER_KILL_SLACK_S
            if busy:
                # A worker interrupts, then kills, a job that outlives the
                # grace (workers/worker.py); its work horse is gone once the
                # job's run is recorded. Idle once no worker runs a job; past
                # the deadline, this is the backstop.
                if not worker.wait_idle(plan.left(worker_deadline)):
                    log_event(log, logging.ERROR, "worker_killed", site=self.site,
                              reason="still running past the stop's deadline")
                    worker.kill()
            # 2. release: followers wake at once. With no job running this comes
            # first; no job starts on this site any more (the worker was told),
            # and the scheduler stops enqueuing as the elector demotes (its
            # on_demoted runs before the release).
            self.elector.stop(timeout=min(RELEASE_S, max(0.1, plan.left(plan.exit_by) - HTTP_STOP_S)))
            log_event(log, logging.INFO, "handed_over", site=self.site, job_was_running=busy,
                      ms=round((time.monotonic() - plan.started) * 1000))
        finally:
            if handed_over is not None:
                handed_over()
        self.watchdog.stop()
        self.presence.stop(wait=min(RELEASE_S, plan.left(plan.exit_by)))  # its last write says "stopping"
        self.scheduler.stop(SCHEDULER_STOP_S)  # 3. its thread ends
        if worker and not worker.wait(plan.left(worker_deadline)):
            log_event(log, logging.ERROR, "worker_killed", site=self.site, reason="did not exit after the handoff")
            worker.kill()
        self.write_state()

    # channels to the HTTP workers -------------------------------------------------

    def state(self) -> dict:
        elector = self.elector
        leader = elector.leader
        term = elector.term()
        return {
            "site": self.site,
            "holder": self.lease.identity.holder,
            "role": "leader" if term else "follower",
            "token": term.token if term else None,
            # The term's self-fencing deadline on the wall clock: readers of
            # this file (the HTTP workers) trust "leader" only until then, so
            # a file written before the process froze never says leader once
            # the elector no longer believes it (app/state.py).
            "leader_until": time.time() + (term.valid_until - time.monotonic()) if term else None,
            "redis_ok": elector.redis_ok,
            "redis_full": elector.redis_full or self.scheduler.redis_full,
            "leader_site": leader.site if leader else None,
            # Whether this site has a worker that can run a job (a live
            # readiness mark: election/readiness.py), and if not, whether a
            # ready site waits to take the lease over.
            "ready": elector.ready,
            "ready_elsewhere": elector.ready_elsewhere,
            "stopping": self._stopping.is_set(),
            "counters": dict(elector.counters),
            # The embedded workers (none with BATON_EMBEDDED_WORKER=false: a
            # worker dyno runs them). alive: at least one of them is running.
            "worker": {"embedded": bool(self.worker), "concurrency": self.settings.core.worker_concurrency,
                       "alive": bool(self.worker and self.worker.alive),
                       "processes_alive": self.worker.processes_alive if self.worker else 0,
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
        refresh = state_refresh_s(self.settings.core.election)
        while not self._stopping.wait(refresh):
            try:
                self.write_state()
            except OSError as exc:
                log_event(log, logging.WARNING, "state_write_failed", error=str(exc))
