"""The tick jobs of one scheduler wake-up, built before their time and sent
in one round trip at it.

Building an RQ job costs ~100 µs of Python (the job's hash, its pickled
arguments), and redis-py's pipeline spends as much again packing and
bookkeeping its commands at ``execute()``: a thousand entries due in the
same second were enqueued ~300 ms late. So the scheduler prepares the batch
ahead (``TickBatch.prepare``: which ticks already exist, the jobs and their
ledger entries built with RQ's own enqueue on a pipeline, then packed into
the bytes of one MULTI ... EXEC) and at the tick only writes those bytes and
reads the replies (``execute``: ~30 ms for a thousand ticks). A tick is never
enqueued without its ledger entry: one MULTI.

What a tick job looks like in Redis:
- result_ttl 0: RQ deletes the job as soon as it succeeds. What users need
  to know about a run (outcome, times, error text) is kept by Baton itself
  (runs.py), bounded, so RQ's per-job residue (~6 KB: the job hash and a
  results stream) never piles up;
- failure_ttl ``FAILED_JOB_TTL_S``: a failed job stays in RQ's failed
  registry a minute, for ``rq info`` and RQ dashboards;
- ttl: the job's hash expires if nobody started it by its deadline (tick +
  grace) plus ``claims.CLAIM_SLACK_S``. The leader's sweep clears such
  ticks sooner (orphans.py); this is the backstop when no site sweeps.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from redis.exceptions import ResponseError
from rq import Queue
from rq.job import Job

from .claims import CLAIM_SLACK_S, add_to_ledger
from .copies import FAILED_JOB_TTL_S
from .entries import rq_queue_name
from .runner import run_tick
from .ticks import grace_of, tick_id

# A manual run ("run now") may start this late at least: long enough for a
# handoff or a busy worker, whatever the entry's own grace.
MANUAL_MIN_GRACE_S = 60.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class TickBatch:
    """Tick jobs ``[(entry, tick), ...]`` queued on one MULTI, not yet sent."""

    def __init__(self, connection, prefix: str, zone, token, *, manual_by: str | None = None):
        self.connection = connection
        # A manual run ("run now"): who asked; its job id says it is manual.
        self.manual_by = manual_by
        self.prefix = prefix
        self.zone = zone
        self.token = token
        self.jobs = []  # (entry, tick, job id) actually in the batch
        self.skipped_existing = 0
        self._commands = 0
        self._packed = None  # the MULTI ... EXEC bytes
        self._conn = None  # the connection they were packed for, held until sent
        self._ledger_replies = []  # positions of the ledger HSETs among the EXEC's replies

    def job_id(self, entry, tick: float) -> str:
        if self.manual_by is not None:
            return f"{self.prefix}-{entry.name}-m{round(tick * 1000)}"
        return f"{self.prefix}-{tick_id(entry, tick)}"

    def prepare(self, ticks) -> "TickBatch":
        """Queue every tick that is not enqueued yet (one EXISTS round trip)."""
        ticks = list(ticks)
        with self.connection.pipeline(transaction=False) as pipe:
            for entry, tick in ticks:
                pipe.exists(Job.key_for(self.job_id(entry, tick)))
            exists = pipe.execute() if ticks else []
        pipe = self.connection.pipeline(transaction=True)
        queues = {}
        now = time.time()
        for (entry, tick), already in zip(ticks, exists):
            job_id = self.job_id(entry, tick)
            if already:  # enqueued before a crash or by another scheduler: runs once anyway
                self.skipped_existing += 1
                continue
            queue = queues.get(entry.queue)
            if queue is None:
                queue = queues[entry.queue] = Queue(rq_queue_name(self.prefix, entry.queue),
                                                    connection=self.connection)
            grace = grace_of(entry, tick, self.zone)
            if self.manual_by is not None:
                grace = max(grace, MANUAL_MIN_GRACE_S)
            deadline = tick + grace
            queue.enqueue_call(
                func=run_tick,
                args=(entry.name, tick, job_id, entry.func_path, tuple(entry.args), dict(entry.kwargs),
                      grace, entry.on_lost_lease, self.prefix),
                job_id=job_id,
                timeout=entry.timeout,
                result_ttl=0,
                failure_ttl=FAILED_JOB_TTL_S,
                ttl=max(1, int(deadline - now) + CLAIM_SLACK_S),
                description=f"{entry.name} @ {iso(tick)}",
                meta={"baton_entry": entry.name, "baton_tick": tick, "enqueued_by_token": self.token,
                      "baton_on_interrupt": entry.on_interrupt, "baton_overlap": entry.overlap,
                      "baton_due": tick, "baton_deadline": deadline, "baton_attempt": 0,
                      "baton_retries": entry.retries, "baton_retry_backoff": entry.retry_backoff,
                      **({"baton_ping_url": entry.ping_url} if entry.ping_url else {}),
                      **({"baton_manual": self.manual_by} if self.manual_by is not None else {})},
                pipeline=pipe,
            )
            add_to_ledger(pipe, self.prefix, job_id, queue.name, deadline)
            self._ledger_replies.append(len(pipe.command_stack) - 1)
            self.jobs.append((entry, tick, job_id))
        if self.jobs:
            commands = [("MULTI",)] + [args for args, _options in pipe.command_stack] + [("EXEC",)]
            self._commands = len(commands)
            self._conn = self.connection.connection_pool.get_connection()
            self._packed = self._conn.pack_commands(commands)
        pipe.reset()
        return self

    def execute(self) -> list:
        """Send the batch. Returns the errors of ledger writes (junk at the
        ledger key: the ticks themselves are enqueued); raises if the jobs
        could not be enqueued (then none was: one MULTI)."""
        conn, packed, self._conn, self._packed = self._conn, self._packed, None, None
        if conn is None:
            return []
        queued_errors = []
        try:
            conn.send_packed_command(packed)
            for _ in range(self._commands - 1):  # MULTI's OK, then QUEUED (or why not) for each command
                try:
                    conn.read_response()
                except ResponseError as exc:  # refused while queuing (OOM): the EXEC aborts
                    queued_errors.append(exc)
            try:
                replies = conn.read_response()
            except ResponseError as exc:  # EXECABORT
                raise (queued_errors[0] if queued_errors else exc) from None
        except BaseException:
            conn.disconnect()  # replies may be left unread on it
            raise
        finally:
            self.connection.connection_pool.release(conn)
        ledger = set(self._ledger_replies)
        failed = [reply for i, reply in enumerate(replies) if isinstance(reply, Exception) and i not in ledger]
        if failed:
            raise failed[0]
        return [replies[i] for i in self._ledger_replies if isinstance(replies[i], Exception)]

    def discard(self) -> None:
        if self._conn is not None:
            self.connection.connection_pool.release(self._conn)
            self._conn, self._packed = None, None
