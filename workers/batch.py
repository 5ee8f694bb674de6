"""The tick jobs of one scheduler wake-up, built before their time and sent
in one round trip at it.

Building an RQ job costs ~70 µs of Python (the job's hash, its pickled
arguments) and sending it ~100 µs more as separate replies: a thousand
entries due in the same second would be enqueued over ~170 ms, one after
the other. So the scheduler prepares the batch ahead (``TickBatch.prepare``:
which ticks already exist, the jobs and their ledger entries queued on one
MULTI) and at the tick only sends it (``execute``). Everything is
written in one MULTI: a tick is never enqueued without its ledger entry.

What a tick job looks like in Redis:
- result_ttl 0: RQ deletes the job as soon as it succeeds. What users need
  to know about a run (outcome, times, error text) is kept by Baton itself
  (runs.py), bounded, so RQ's per-job residue (~6 KB: the job hash and a
  results stream) never piles up;
- failure_ttl ``FAILED_JOB_TTL_S``: a failed job stays in RQ's failed
  registry that long, for ``rq info`` and RQ dashboards;
- ttl: the job's hash expires if nobody started it by its deadline (tick +
  grace) plus ``claims.CLAIM_SLACK_S``. The leader's sweep clears such
  ticks sooner (orphans.py); this is the backstop when no site sweeps.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from rq import Queue
from rq.job import Job

from .claims import CLAIM_SLACK_S, add_to_ledger
from .entries import rq_queue_name
from .runner import run_tick
from .ticks import grace_of, tick_id

# How long RQ keeps a failed tick job (its hash and traceback) in its failed
# registry. Baton keeps every failure's error text in its own run log; a
# failing 1 s entry costs ~2 MB of RQ residue at this setting.
FAILED_JOB_TTL_S = 300


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class TickBatch:
    """Tick jobs ``[(entry, tick), ...]`` queued on one MULTI, not yet sent."""

    def __init__(self, connection, prefix: str, zone, token):
        self.connection = connection
        self.prefix = prefix
        self.zone = zone
        self.token = token
        self.jobs = []  # (entry, tick, job id) actually in the batch
        self.skipped_existing = 0
        self._pipe = None
        self._ledger_replies = []  # positions of the ledger HSETs among the replies

    def job_id(self, entry, tick: float) -> str:
        return f"{self.prefix}-{tick_id(entry, tick)}"

    def prepare(self, ticks) -> "TickBatch":
        """Queue every tick that is not enqueued yet (one EXISTS round trip)."""
        ticks = list(ticks)
        with self.connection.pipeline(transaction=False) as pipe:
            for entry, tick in ticks:
                pipe.exists(Job.key_for(self.job_id(entry, tick)))
            exists = pipe.execute() if ticks else []
        pipe = self._pipe = self.connection.pipeline(transaction=True)
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
                      "baton_on_interrupt": entry.on_interrupt},
                pipeline=pipe,
            )
            add_to_ledger(pipe, self.prefix, job_id, queue.name, deadline)
            self._ledger_replies.append(len(pipe.command_stack) - 1)
            self.jobs.append((entry, tick, job_id))
        return self

    def execute(self) -> list:
        """Send the batch. Returns the errors of ledger writes (junk at the
        ledger key: the ticks themselves are enqueued); raises if the jobs
        could not be enqueued (nothing was: one MULTI)."""
        pipe, self._pipe = self._pipe, None
        if pipe is None or not self.jobs:
            return []
        try:
            replies = pipe.execute(raise_on_error=False)
        finally:
            pipe.reset()
        ledger = set(self._ledger_replies)
        failed = [reply for i, reply in enumerate(replies) if isinstance(reply, Exception) and i not in ledger]
        if failed:
            raise failed[0]
        return [replies[i] for i in self._ledger_replies if isinstance(replies[i], Exception)]

    def discard(self) -> None:
        if self._pipe is not None:
            self._pipe.reset()
            self._pipe = None
