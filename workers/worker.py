"""An RQ worker that works only while its own site holds the lease.

Before it dequeues, it waits until the lease in Redis names its site. After it
dequeues a job — the lease may have moved during a long BLMOVE — it reads the
lease again; if its site no longer leads, the job goes back to the front of
its queue untouched (never dropped) and the worker waits to lead again.
Fail closed: if the lease cannot be read, nothing runs.
The job is stamped with the site and fencing token it runs under.
"""

from __future__ import annotations

import logging
import signal
import time

from redis.exceptions import RedisError
from rq.worker import Worker, WorkerStatus

from election import LeaseCorrupt, read_lease
from election.logfmt import log_event

log = logging.getLogger("baton.worker")

# How often a waiting (non-leading) worker re-reads the lease: takeover by
# this site is noticed within this, at one command per period.
LEADERSHIP_POLL_S = 1.0


class LeaderGatedWorker(Worker):
    baton_site: str = ""
    baton_prefix: str = "baton"

    def _leading_token(self):
        """The token if this site holds the lease, else None (and None on any doubt)."""
        try:
            record = read_lease(self.connection, self.baton_prefix)
        except (RedisError, LeaseCorrupt) as exc:
            log_event(log, logging.WARNING, "lease_unreadable", site=self.baton_site, error=f"{type(exc).__name__}: {exc}")
            return None
        if record is not None and record.site == self.baton_site:
            return record.token
        return None

    def _wait_to_lead(self) -> bool:
        """Block until this site leads; False if a stop was requested meanwhile."""
        announced = False
        while not self._stop_requested:
            if self._leading_token() is not None:
                if announced:
                    log_event(log, logging.INFO, "worker_resumed", site=self.baton_site)
                return True
            if not announced:
                log_event(log, logging.INFO, "worker_waiting_for_lease", site=self.baton_site)
                announced = True
            try:
                self.heartbeat()
            except RedisError:
                pass  # Redis trouble: keep waiting (RQ would quit on an error raised here)
            time.sleep(LEADERSHIP_POLL_S)
        return False

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        if not self._wait_to_lead():
            return None  # RQ's loop ends on None: a stop was requested
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def execute_job(self, job, queue):
        # While idle, RQ answers SIGTERM by raising StopRequested inside the
        # signal handler, which could cut the put-back in half and strand the
        # job in the intermediate list. Marked busy, a SIGTERM only asks the
        # loop to stop after this job.
        idle_state, self._state = self._state, WorkerStatus.BUSY
        try:
            token = self._leading_token()
            if token is None:
                self._put_back(job, queue)
                return
        finally:
            self._state = idle_state
        job.meta["baton_site"] = self.baton_site
        job.meta["baton_token"] = token
        job.save_meta()
        super().execute_job(job, queue)

    def request_stop(self, signum, frame):
        """Warm shutdown on the first SIGTERM or SIGINT, as RQ does — but a
        repeated SIGTERM changes nothing (Heroku may send several, and RQ
        would turn the second into a cold shutdown that kills the running
        job). A second SIGINT still forces a cold shutdown."""
        try:
            super().request_stop(signum, frame)
        finally:
            signal.signal(signal.SIGTERM, self._ignore_repeated_sigterm)

    def _ignore_repeated_sigterm(self, _signum, _frame):
        log_event(log, logging.INFO, "sigterm_repeated", site=self.baton_site, action="ignored")

    def _put_back(self, job, queue) -> None:
        """Return a dequeued job to the front of its queue, as it was."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(queue.key, job.id)
            pipe.execute()
        log_event(log, logging.INFO, "job_returned", site=self.baton_site, job_id=job.id, queue=queue.name)
