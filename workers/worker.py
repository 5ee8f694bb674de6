"""An RQ worker that works only while its own site holds the lease, and
stops the way the platforms it runs on expect.

**Leadership.** Before it dequeues, it waits until the lease in Redis names
its site — told of every new term by push (election_feed.py), so it starts
within a round trip of its site's election and costs Redis next to nothing
while it waits. After it dequeues a job — the lease may have moved during the
BLMOVE — it reads the lease again; if its site no longer leads, or the worker
is stopping, the job goes back to the front of its queue untouched (never
dropped) and the worker waits again. Fail closed: if the lease cannot be
read, nothing runs. The job is stamped with the site and fencing token it
runs under. A worker whose site has no elector competing at all (a worker
dyno whose ``BATON_SITE`` differs from its web dyno's) would wait forever;
it says so, naming both sites, and /status shows it (presence.py).

**Stopping** (the timeline and its numbers: shutdown.py):
- the first SIGTERM or SIGINT: no new job; a running one may finish for up
  to ``BATON_SHUTDOWN_GRACE``, is then interrupted (``INTERRUPT_SIGNAL``:
  JobInterrupted raised inside it, recorded as ``interrupted``), and its work
  horse SIGKILLed ``INTERRUPT_WAIT_S`` later (recorded here as ``killed``).
  The entry's ``on_interrupt`` decides whether the tick goes back to its
  queue for the next leader (reruns.py);
- repeated SIGTERMs change nothing (Heroku may send several; RQ would turn
  the second into a cold stop); a second SIGINT is still RQ's cold stop;
- SIGHUP: the gunicorn master that started this worker died
  (parent_death.py): the same stop, with no grace;
- the work horse ignores SIGTERM, SIGINT and SIGHUP — Heroku signals every
  process of the dyno, and the horse must not die before its worker says so —
  and is SIGKILLed by the kernel if its worker dies;
- whatever Redis does, the process is gone by the stop's deadline.

**Readiness.** The worker marks its site ready (election/readiness.py)
every ``presence.READY_BEAT_S`` (1 s) in every state — waiting for its site to lead,
listening for a job, watching its work horse run one — so its site's elector
competes only while the site has a worker that can run a job, and hands the
lease over when its last one is gone (the bound: README, "Leadership follows
the workers"). A stopping worker marks only while its running job goes on,
and clears its mark as it exits.

**Redis trouble** while starting, waiting, dequeuing or watching a job is
retried in place every ``OUTAGE_RETRY_S`` and reported as a few lines
(election.outage) — RQ's own loop would quit on it — so the worker resumes
within a second of Redis and the elector.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

from redis.exceptions import RedisError
from rq.exceptions import DequeueTimeout
from rq.worker import Worker, WorkerStatus

from election import Keys, LeaseCorrupt, clear_ready, mark_ready, read_lease
from election.logfmt import log_event
from election.outage import OutageLog

from . import presence
from .alerts import AlertConfig, AlertSender
from .election_feed import ElectionFeed
from .entries import RERUN
from .parent_death import die_with_parent
from .claims import claim_key_id
from .reruns import HORSE_LOST, HORSE_LOST_FIX, rerun
from .runner import INTERRUPT_SIGNAL, end_run, raise_interrupted
from .pings import Pinger
from .runs import FAILED_OUTCOMES, record_run
from .sites import release_version
from .shutdown import INTERRUPT_WAIT_S, WINDING_DOWN_NICENESS, WORKER_EXIT_S, StopPlan

log = logging.getLogger("baton.worker")

# A waiting worker learns of its site's election by push; it re-reads the
# lease anyway this often while another site leads (with its presence
# refresh: ~4 commands per period), in case the push was lost with a broken
# subscription...
LEADERSHIP_RECHECK_S = presence.REFRESH_S

# ...and this often while nobody holds the lease (milliseconds between a
# release or an expiry and the next acquire, or no site competing at all).
FREE_LEASE_RECHECK_S = 1.0

# How often junk at the lease key is looked at again.
CORRUPT_LEASE_POLL_S = 1.0

# How often a Redis call is retried during an outage. With the push of the
# next term this keeps the worker within a second of its elector after Redis
# returns (make bench: "Redis restarted").
OUTAGE_RETRY_S = 0.5

# RQ's worker TTL. RQ blocks in BLMOVE for the TTL less 15 s and sizes the
# connection's socket timeout at the TTL less 5 s: 30 s (presence.REFRESH_S,
# so a leading worker refreshes its presence at each wait) and 40 s, instead
# of RQ's 405 s and 415 s — a frozen Redis holds a call for 40 s at most.
WORKER_TTL_S = 45

# The worker's connections' socket timeout, as RQ sizes it (the TTL less 5 s),
# set when the client is made (workers/__main__.py): RQ raises the timeout in
# its pool's options, which only reaches connections made after that, and
# redis-py's default of 5 s would cut every 30 s BLMOVE short.
SOCKET_TIMEOUT_S = WORKER_TTL_S - 5

# A waiting elector notes itself in the waiters set at least every
# ElectionConfig.follower_wait_max (5 s at the default timings). A worker
# waiting while another site leads looks there that often (one ZRANGE)
# whether an elector of its own site competes; with none for this many
# periods (30 s at the defaults: a web dyno booting beside it gets the rest)
# it warns, and again every NOT_COMPETING_REPEAT_S while it lasts.
NOT_COMPETING_PERIODS = 6
NOT_COMPETING_REPEAT_S = 600.0

# RQ's own heartbeat (the worker's key in RQ, the running job's) is kept at
# the pace it had before the work horse's watch woke every READY_BEAT_S.
RQ_HEARTBEAT_S = 30.0

# A tick whose work horse died before the job began goes back to its queue
# after this long, doubled at each such death (0.5, 1, 2 s: reruns.MAX_RERUNS
# of them): a horse that cannot start (Redis refusing new connections)
# would otherwise use up its reruns in milliseconds.
HORSE_LOST_BACKOFF_S = 0.5

# The process's exit status when the stop's deadline ended it (Redis frozen).
EXIT_DEADLINE = 3


class _Stopper(threading.Thread):
    """Carries out one stop in the RQ worker process: interrupts a job still
    running at the plan's interrupt time, SIGKILLs it INTERRUPT_WAIT_S later,
    and ends the process WORKER_EXIT_S after that if it is still here (RQ's
    bookkeeping blocked on a frozen Redis). ``hurry()``: interrupt now."""

    def __init__(self, worker: "LeaderGatedWorker", plan: StopPlan):
        super().__init__(daemon=True, name="baton-worker-stop")
        self.worker, self.plan = worker, plan
        self._hurry = threading.Event()

    def hurry(self) -> None:
        self._hurry.set()

    def run(self) -> None:
        self._hurry.wait(self.plan.left(self.plan.interrupt_at))
        interrupted_at = time.monotonic()
        self.worker.interrupt_job()
        time.sleep(self.plan.left(interrupted_at + INTERRUPT_WAIT_S))
        self.worker.kill_job()
        time.sleep(self.plan.left(interrupted_at + INTERRUPT_WAIT_S + WORKER_EXIT_S))
        log_event(log, logging.ERROR, "worker_exit_forced", site=self.worker.baton_site,
                  reason="the stop's deadline passed (Redis unreachable or frozen?)")
        os._exit(EXIT_DEADLINE)


class LeaderGatedWorker(Worker):
    def __init__(self, queues, *, site: str, prefix: str, shutdown_grace: float, site_check_s: float,
                 watch_parent: int | None = None, renew_deadline: float = 7.0, alerts: AlertConfig = AlertConfig(),
                 replicas_ack: int = 0, replica_ack_timeout: float = 0.5,
                 **kwargs):
        kwargs.setdefault("worker_ttl", WORKER_TTL_S)
        kwargs.setdefault("job_monitoring_interval", presence.READY_BEAT_S)
        super().__init__(queues, **kwargs)
        # RQ names the connection it found idle after the RQ worker (CLIENT
        # SETNAME <worker name>); give it back the name all of Baton's
        # connections have, baton:<site>:worker, so CLIENT LIST says who it is.
        own_name = self.connection.connection_pool.connection_kwargs.get("client_name")
        if own_name:
            try:
                self.connection.client_setname(own_name)
            except RedisError:
                pass  # a proxy that refuses CLIENT SETNAME (RQ met the same), or Redis gone: a name is for people
        self.baton_site = site
        self.baton_prefix = prefix
        self.shutdown_grace = shutdown_grace
        self.site_check_s = site_check_s  # ElectionConfig.follower_wait_max
        # ElectionConfig.renew_deadline: a running job that cannot confirm its
        # site's lease for this long stops if its entry says so (runner.py).
        self.renew_deadline = renew_deadline
        # Jobs raise alerts only where a webhook is configured; this process
        # sends them (alerts.py), after each job.
        self.alerts = alerts
        # BATON_REDIS_REPLICAS_ACK: a run starts only on a claim that many
        # replicas have (runner._claim).
        self.replicas_ack, self.replica_ack_timeout = replicas_ack, replica_ack_timeout
        self._alert_sender = AlertSender(self.connection, prefix, alerts, site)
        self._pinger = Pinger(site)
        self.watch_parent = watch_parent  # the master's pid for an embedded worker: SIGHUP when it dies
        self._keys = Keys(prefix)
        self._outage = OutageLog(log, site, "worker")
        self._corrupt_reported_at = None
        self._stop_plan: StopPlan | None = None
        self._stopper: _Stopper | None = None
        self._master_gone = False
        self._running_job_id = None
        self._interrupted_job_id = None
        self._killed_job_id = None
        self._feed: ElectionFeed | None = None  # open only while waiting
        self._published = None  # (state, leader site) last written
        self._presence = {}  # the record last written
        self._version = release_version()
        self._published_since = None
        self._next_refresh = 0.0
        self._own_site_missing_since = None
        self._next_site_check = 0.0
        self._next_missing_warning = 0.0
        self._next_beat = 0.0
        self._forked_for = None  # the job id a work horse was last forked for
        self._horse_lost = None  # (job id, wait status) of a horse that died on its own
        self._next_rq_heartbeat = 0.0

    @property
    def stopping(self) -> bool:
        """True from the first stop signal on."""
        return self._stop_plan is not None

    # -- leadership --------------------------------------------------------

    def _read_lease(self):
        """The lease, or None if it is free. Junk at the lease key is reported
        (once a minute) and raised as LeaseCorrupt: callers run nothing (fail
        closed). Raises RedisError for the caller's outage handling."""
        try:
            return read_lease(self.connection, self.baton_prefix)
        except LeaseCorrupt as exc:
            now = time.monotonic()
            if self._corrupt_reported_at is None or now - self._corrupt_reported_at >= 60:
                self._corrupt_reported_at = now
                log_event(log, logging.WARNING, "lease_unreadable", site=self.baton_site, key=exc.key,
                          problem=exc.problem, fix=exc.fix, action="running nothing until it is fixed")
            raise

    def _leading_token(self):
        """The token if this site holds the lease, else None (and None on any doubt)."""
        try:
            record = self._read_lease()
        except LeaseCorrupt:
            return None
        except RedisError as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return record.token if record is not None and record.site == self.baton_site else None

    def _wait_to_lead(self) -> bool:
        """Block until this site leads; False if a stop was requested meanwhile
        (a stop while idle usually arrives as RQ's StopRequested instead)."""
        announced = False
        while not self.stopping:
            try:
                record = self._read_lease()
                if not self._leads(record) and self._feed is None:
                    # Subscribed, then read again: a term that starts after
                    # this read is pushed to the feed, none is missed.
                    self._feed = ElectionFeed(self.connection, self.baton_prefix)
                    record = self._read_lease()
                self._outage.succeeded()
                if self._leads(record):
                    self._close_feed()
                    if announced:
                        log_event(log, logging.INFO, "worker_resumed", site=self.baton_site, token=record.token)
                    self._publish("leading", record.site)
                    return True
                if not announced:
                    log_event(log, logging.INFO, "worker_waiting_for_lease", site=self.baton_site,
                              leader_site=record.site if record else None)
                    announced = True
                self._publish(self._watch_own_site(record), record.site if record else None)
                self._wait_for_term(self._recheck_in(record))
            except LeaseCorrupt:  # Redis answered; what it holds is junk: wait for a fix
                self._outage.succeeded()
                time.sleep(CORRUPT_LEASE_POLL_S)
            except RedisError as exc:
                self._outage.failed(exc)
                self._close_feed()
                time.sleep(OUTAGE_RETRY_S)
        return False

    def _wait_for_term(self, timeout: float) -> None:
        """Wait on the feed for a new term, up to ``timeout`` s, marking the
        site ready every READY_BEAT_S meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self._beat()
            left = deadline - time.monotonic()
            if left <= 0 or self._feed.wait(min(left, presence.READY_BEAT_S)):
                return

    def _beat(self) -> "str | None":
        """Mark the site ready (module docstring), at most every READY_BEAT_S.
        Once stopping, only while the job it runs goes on: a dyno stop lets
        the running job finish under its site's lease, and the master hands
        the lease over after it (app/runtime.py) — not this mark running out
        mid-job. Junk at the key is reported (once a minute); an outage is
        told by the caller's next command. Returns the site that holds the
        lease, as the mark's reply says it ('' for none), or None when no
        mark was sent."""
        now = time.monotonic()
        if (self.stopping and self._running_job_id is None) or now < self._next_beat:
            return None
        self._next_beat = now + presence.READY_BEAT_S
        try:
            return mark_ready(self.connection, self.baton_prefix, self.baton_site, self.name,
                              round(presence.READY_LIVE_S * 1000))[1]
        except LeaseCorrupt as exc:
            if self._corrupt_reported_at is None or now - self._corrupt_reported_at >= 60:
                self._corrupt_reported_at = now
                log_event(log, logging.WARNING, "ready_key_unreadable", site=self.baton_site, key=exc.key,
                          problem=exc.problem, fix=exc.fix,
                          effect="every site counts as able to work until it is fixed")
        except RedisError as exc:
            self._outage.failed(exc)
        return None

    def _leads(self, record) -> bool:
        return record is not None and record.site == self.baton_site

    def _recheck_in(self, record) -> float:
        """How long to wait for a push before looking again: until the
        presence refresh, or until a site_not_competing warning falls due."""
        now = time.monotonic()
        wait = min(LEADERSHIP_RECHECK_S if record is not None else FREE_LEASE_RECHECK_S, self._next_refresh - now)
        if self._own_site_missing_since is not None:
            wait = min(wait, self._own_site_missing_since + NOT_COMPETING_PERIODS * self.site_check_s - now)
        return max(0.0, wait)

    def _close_feed(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def _watch_own_site(self, record) -> str:
        """'waiting', or 'site_not_competing' when another site leads and no
        elector of this worker's site has been competing for a while."""
        now = time.monotonic()
        if record is None:
            self._own_site_missing_since = None
            return "waiting"
        if now >= self._next_site_check:
            self._next_site_check = now + self.site_check_s
            mine = f"{self.baton_site}/"
            waiting = self.connection.zrange(self._keys.waiters, 0, -1)
            if any((w.decode() if isinstance(w, bytes) else w).startswith(mine) for w in waiting):
                self._own_site_missing_since = None
            elif self._own_site_missing_since is None:
                self._own_site_missing_since = now
        missing = self._own_site_missing_since
        if missing is None or now - missing < NOT_COMPETING_PERIODS * self.site_check_s:
            return "waiting"
        if now >= self._next_missing_warning:
            self._next_missing_warning = now + NOT_COMPETING_REPEAT_S
            log_event(log, logging.WARNING, "site_not_competing", site=self.baton_site, leader_site=record.site,
                      waiting_s=round(now - missing),
                      fix=f"no elector of site {self.baton_site!r} competes for the lease, so this worker never "
                          f"runs a job: give this process the BATON_SITE of a web process (the leader is "
                          f"{record.site!r}), or run a web process with BATON_SITE={self.baton_site}")
        return "site_not_competing"

    def _publish(self, state: str, leader_site) -> None:
        """This worker's presence (presence.py): on a change, and every REFRESH_S
        with RQ's own heartbeat."""
        now = time.monotonic()
        changed = (state, leader_site) != self._published
        if not changed and now < self._next_refresh:
            return
        since = time.time() if changed else self._published_since
        self._presence = {"site": self.baton_site, "state": state, "leader_site": leader_site, "pid": os.getpid(),
                          "since": since, "version": self._version}
        presence.publish(self.connection, self.baton_prefix, self.name, self._presence)
        self.heartbeat()
        self._published, self._published_since = (state, leader_site), since
        self._next_refresh = now + presence.REFRESH_S

    # -- the work loop -----------------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """RQ's dequeue, gated on leadership and riding out Redis trouble:
        returns a (job, queue) once this site leads and a job arrives, or
        None once a stop was requested (RQ's loop then ends)."""
        while True:
            try:
                self.set_state(WorkerStatus.IDLE)
                # The mark says whether this site still leads; only when it
                # does not (or no mark was due) is the lease read, and waited on.
                if self._beat() == self.baton_site:
                    self._publish("leading", self.baton_site)  # written on a change or every REFRESH_S
                elif not self._wait_to_lead():
                    return None
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                self.procline("Listening on " + ",".join(self.queue_names()))
                # Back within READY_BEAT_S for the next mark (BLMOVE returns
                # at once when a job comes).
                wait = presence.READY_BEAT_S if timeout is None else min(timeout, presence.READY_BEAT_S)
                result = self.queue_class.dequeue_any(
                    self.queues, wait, connection=self.connection, job_class=self.job_class,
                    serializer=self.serializer, death_penalty_class=self.death_penalty_class,
                )
                self._outage.succeeded()
                if result is not None:
                    job, _queue = result
                    job.redis_server_version = self.get_redis_server_version()
                    return result
            except DequeueTimeout:
                continue  # look at the lease again, refresh the presence
            except RedisError as exc:
                self._outage.failed(exc)
                time.sleep(OUTAGE_RETRY_S)

    def run_maintenance_tasks(self):
        try:
            super().run_maintenance_tasks()
        except RedisError as exc:  # RQ's registry cleanup: skipped during an outage, tried again later
            self._outage.failed(exc)

    def check_for_suspension(self, burst):
        try:
            super().check_for_suspension(burst)
        except RedisError as exc:  # `rq suspend` cannot be read: the dequeue waits out the outage
            self._outage.failed(exc)

    def register_birth(self):
        """RQ's registration, retried until Redis answers (RQ would end the
        process on its error). The name is this process's own (a random boot
        id): a key under it was written by an earlier try whose reply was lost."""
        while True:
            try:
                self.connection.delete(self.key)
                super().register_birth()
                self._outage.succeeded()
                return
            except RedisError as exc:
                self._outage.failed(exc)
                time.sleep(OUTAGE_RETRY_S)

    def set_state(self, state, pipeline=None):
        """RQ's state field, for ``rq info``: written when it changes (RQ
        writes it at every turn of its loop, once a second here), and an
        outage leaves it stale rather than end the worker (inside a pipeline,
        the pipeline's owner handles it)."""
        if pipeline is not None:
            return super().set_state(state, pipeline)
        if state == self._state:
            return None
        try:
            super().set_state(state)
        except RedisError as exc:
            self._outage.failed(exc)

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's heartbeat; one lost to an outage is sent again later."""
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        try:
            super().heartbeat(timeout)
        except RedisError as exc:
            self._outage.failed(exc)

    def maintain_heartbeats(self, job, execution):
        """Called by RQ every presence.READY_BEAT_S while the work horse runs: the
        site's readiness mark each time, RQ's heartbeats every RQ_HEARTBEAT_S;
        a Redis error here is retried at the next call, never the end of the
        worker (the job goes on in its horse)."""
        self._beat()
        now = time.monotonic()
        if now < self._next_rq_heartbeat:
            return
        try:
            super().maintain_heartbeats(job, execution)
            self._next_rq_heartbeat = now + RQ_HEARTBEAT_S
        except RedisError as exc:
            self._outage.failed(exc)

    def execute_job(self, job, queue):
        """Run the job (``_execute_job``); a Redis error in RQ's bookkeeping
        around it ends neither the worker nor the loop. A job whose horse was
        never forked goes back to its queue once Redis answers."""
        self._next_rq_heartbeat = time.monotonic() + RQ_HEARTBEAT_S  # RQ sends one as it forks
        try:
            self._execute_job(job, queue)
        except RedisError as exc:
            self._outage.failed(exc)
            log_event(log, logging.WARNING, "job_bookkeeping_failed", site=self.baton_site, job_id=job.id,
                      error=f"{type(exc).__name__}: {exc}",
                      effect="the run records itself; RQ's registries catch up at their next cleanup")
            if self._forked_for != job.id:
                self._put_back_when_redis_answers(job, queue)

    def fork_work_horse(self, job, queue):
        self._forked_for = job.id
        super().fork_work_horse(job, queue)

    def _put_back_when_redis_answers(self, job, queue) -> None:
        while not self.stopping:
            try:
                self._put_back(job, queue)
                return
            except RedisError as exc:
                self._outage.failed(exc)
                time.sleep(OUTAGE_RETRY_S)

    def _execute_job(self, job, queue):
        # While idle, RQ answers SIGTERM by raising StopRequested inside the
        # signal handler, which could cut the put-back in half and strand the
        # job in the intermediate list. Marked busy, a SIGTERM only asks the
        # loop to stop after this job.
        idle_state, self._state = self._state, WorkerStatus.BUSY
        token = None if self.stopping else self._leading_token()
        if token is None:
            try:
                self._put_back(job, queue)
            finally:
                self._state = idle_state
            return
        job.meta["baton_site"] = self.baton_site
        job.meta["baton_token"] = token
        job.meta["baton_renew_deadline"] = self.renew_deadline
        job.meta["baton_alerts"] = self.alerts.enabled
        if self.replicas_ack:
            job.meta["baton_replicas_ack"] = [self.replicas_ack, self.replica_ack_timeout]
        job.save_meta()
        self._running_job_id, started = job.id, time.time()
        self._say_running(job.meta.get("baton_entry"))
        pings = self._watch_claim(job)
        try:
            super().execute_job(job, queue)
        finally:
            self._running_job_id = None
            self._say_running(None)
            if pings is not None:
                pings()
            self._alert_sender.drain()
        if job.id in (self._interrupted_job_id, self._killed_job_id):
            self._after_stopped_job(job, started)
        elif self._horse_lost is not None and self._horse_lost[0] == job.id:
            self._after_lost_horse(job, started, self._horse_lost[1])

    def _watch_claim(self, job):
        """For an entry with a ping_url: a pipe the work horse writes to once
        it has claimed the tick (the start ping goes then, not for a tick
        that is skipped or expires); returns what to call after the job
        (the success or fail ping, from the run's record)."""
        url = job.meta.get("baton_ping_url")
        if not url:
            return None
        entry = job.meta.get("baton_entry")
        read_end, write_end = os.pipe()
        job.meta["baton_claim_pipe"] = write_end  # inherited by the horse; never saved to Redis

        def started():
            with os.fdopen(read_end, "rb") as pipe:
                if pipe.read(1):
                    self._pinger.ping(url, "start", entry)

        reader = threading.Thread(target=started, name="baton-claim-pipe", daemon=True)
        reader.start()

        def ended():
            os.close(write_end)  # the horse's copy closed with it: the reader ends
            job.meta.pop("baton_claim_pipe", None)
            reader.join(1.0)  # the start ping is queued before the end's
            try:
                last = json.loads(self.connection.hget(self._keys.runs, entry) or b"{}")
            except (RedisError, ValueError):
                return
            if last.get("job_id") == job.id and last.get("outcome") == "succeeded":
                self._pinger.ping(url, "success", entry)
            elif last.get("job_id") == job.id and last.get("outcome") in FAILED_OUTCOMES:
                self._pinger.ping(url, "fail", entry)

        return ended

    def _say_running(self, entry) -> None:
        """/status shows which entry each worker runs (presence.py)."""
        try:
            presence.running(self.connection, self.baton_prefix, self.name,
                             presence.record(self.name, self._presence, time.time()), entry)
        except RedisError:
            pass  # the next refresh says it

    def _put_back(self, job, queue) -> None:
        """Return a dequeued job to the front of its queue, as it was."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(queue.key, job.id)
            pipe.execute()
        log_event(log, logging.INFO, "job_returned", site=self.baton_site, job_id=job.id, queue=queue.name,
                  reason="stopping" if self.stopping else "not_leading")

    def subscribe(self):
        """RQ's per-worker command channel (``rq.command``: kill the horse,
        shut down) is not used: Baton's stop is signals and the lease, and
        the channel would hold one more connection per worker."""

    def teardown(self):
        self._close_feed()
        try:
            clear_ready(self.connection, self.baton_prefix, self.baton_site, self.name)
            presence.withdraw(self.connection, self.baton_prefix, self.name)
        except RedisError:
            pass  # the mark runs out after presence.READY_LIVE_S, the presence after presence.TTL_S
        super().teardown()

    # -- stopping ----------------------------------------------------------

    def bootstrap(self, *args, **kwargs):
        super().bootstrap(*args, **kwargs)
        if self.watch_parent is not None:
            signal.signal(signal.SIGHUP, self._parent_died)

    def request_stop(self, signum, frame):
        """The first SIGTERM or SIGINT: a warm stop with the grace (see the
        module docstring). RQ raises StopRequested here when idle."""
        signal.signal(signal.SIGTERM, self._ignore_repeated_sigterm)
        self._begin_stop(signum)
        try:
            super().request_stop(signum, frame)
        finally:
            signal.signal(signal.SIGTERM, self._ignore_repeated_sigterm)

    def _parent_died(self, signum, frame):
        # The kernel may signal more than once as the master's threads die.
        if self._master_gone:
            return
        self._master_gone = True
        log_event(log, logging.WARNING, "master_gone", site=self.baton_site, parent=self.watch_parent,
                  action="stopping now" + (", interrupting the running job" if self.horse_pid else ""))
        if self.stopping:
            self._stopper.hurry()
            return
        self.request_stop(signum, frame)

    def _begin_stop(self, signum) -> None:
        if self.stopping:
            return
        job_running = self.get_state() == WorkerStatus.BUSY
        if not job_running:
            # Only winding down now: leave the CPU to the master, whose
            # release of the lease is what the other site waits for (a dyno
            # stop wakes every process of the dyno at once).
            os.nice(WINDING_DOWN_NICENESS)
        grace = self.shutdown_grace if job_running and signum != signal.SIGHUP else 0.0
        self._stop_plan = StopPlan(grace)
        log_event(log, logging.INFO, "worker_stopping", site=self.baton_site, signal=signal.Signals(signum).name,
                  job_running=job_running, grace_s=grace)
        self._stopper = _Stopper(self, self._stop_plan)
        self._stopper.start()

    def _ignore_repeated_sigterm(self, _signum, _frame):
        log_event(log, logging.INFO, "sigterm_repeated", site=self.baton_site, action="ignored")

    def interrupt_job(self) -> None:
        """Raise JobInterrupted in the running job (the stop's grace ran out)."""
        pid, job_id = self.horse_pid, self._running_job_id
        if not pid or job_id is None:
            return
        self._interrupted_job_id = job_id
        log_event(log, logging.WARNING, "job_interrupted", site=self.baton_site, job_id=job_id,
                  grace_s=self._stop_plan.grace, unwind_s=INTERRUPT_WAIT_S)
        try:
            os.kill(pid, INTERRUPT_SIGNAL)  # the horse only: a job's own subprocesses would die of it
        except ProcessLookupError:
            pass

    def kill_job(self) -> None:
        """SIGKILL a job that outlived its interrupt (and its subprocesses)."""
        pid, job_id = self.horse_pid, self._running_job_id
        if not pid or job_id is None:
            return
        self._killed_job_id = job_id
        log_event(log, logging.ERROR, "job_killed", site=self.baton_site, job_id=job_id,
                  reason=f"still running {INTERRUPT_WAIT_S:g} s after its interrupt")
        self.kill_horse()

    def _after_stopped_job(self, job, started: float) -> None:
        """A job this stop interrupted or killed: record what the horse could
        not, and put its tick back if its entry says so."""
        entry, tick = job.meta.get("baton_entry") or job.args[0], job.meta.get("baton_tick") or job.args[1]
        try:
            if job.id == self._killed_job_id:
                record_run(self.connection, self.baton_prefix, entry, tick=tick, site=self.baton_site,
                           token=job.meta.get("baton_token"), outcome="killed", started_at=started,
                           duration_ms=round((time.time() - started) * 1000), job_id=job.id)
                end_run(job, entry, self.baton_prefix)  # the horse died before it could
            if job.meta.get("baton_on_interrupt") == RERUN:
                rerun(self.connection, self.baton_prefix, job, site=self.baton_site)
        except RedisError as exc:
            log_event(log, logging.ERROR, "stopped_job_not_settled", site=self.baton_site, job_id=job.id,
                      error=f"{type(exc).__name__}: {exc}")

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        """RQ: the work horse ended without finishing its job's bookkeeping
        (RQ files the job as failed next). Noted for _after_lost_horse,
        unless this worker's own stop interrupted or killed it."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        if job.id not in (self._interrupted_job_id, self._killed_job_id):
            self._horse_lost = (job.id, ret_val)

    def _after_lost_horse(self, job, started: float, status) -> None:
        """A work horse that died on its own — an error before the job began
        (Redis refusing its first connection: a full connection plan), the
        kernel's OOM killer, a signal. RQ files the job as failed and the
        ledger lets it go, so without this the tick would be lost unsaid:
        - its run claim was never taken: nothing of it ran, and it goes back
          to the front of its queue (reruns.py; at most MAX_RERUNS times);
        - it was taken but the run recorded nothing: at most once — it is
          recorded as ``killed``, with how the horse ended."""
        self._horse_lost = None
        entry, tick = job.meta.get("baton_entry") or job.args[0], job.meta.get("baton_tick") or job.args[1]
        ended = (f"signal {signal.Signals(os.WTERMSIG(status)).name}" if status and os.WIFSIGNALED(status)
                 else f"exit status {os.WEXITSTATUS(status) if status else status}")
        try:
            claim = self._keys.run_claim(claim_key_id(job.args[2], int(job.meta.get("baton_attempt") or 0)))
            if not self.connection.exists(claim):
                time.sleep(HORSE_LOST_BACKOFF_S * 2 ** int(job.meta.get("baton_reruns", 0)))
                rerun(self.connection, self.baton_prefix, job, site=self.baton_site, reason=f"{HORSE_LOST}: {ended}",
                      fix=HORSE_LOST_FIX)
                return
            last = json.loads(self.connection.hget(self._keys.runs, entry) or b"{}")
            if last.get("job_id") != job.id:
                record_run(self.connection, self.baton_prefix, entry, tick=tick, site=self.baton_site,
                           token=job.meta.get("baton_token"), outcome="killed", reason=f"work horse died: {ended}",
                           started_at=started, duration_ms=round((time.time() - started) * 1000), job_id=job.id)
                end_run(job, entry, self.baton_prefix)
        except (RedisError, ValueError) as exc:
            log_event(log, logging.ERROR, "lost_job_not_settled", site=self.baton_site, job_id=job.id,
                      error=f"{type(exc).__name__}: {exc}")

    # -- the work horse ----------------------------------------------------

    def setup_work_horse_signals(self):
        """In the work horse, right after the fork (see the module docstring)."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(INTERRUPT_SIGNAL, raise_interrupted)  # run_tick installs its own around the job
        if not die_with_parent(signal.SIGKILL, self.pid):
            os._exit(1)  # the worker died while forking: run nothing
