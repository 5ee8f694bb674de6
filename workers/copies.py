"""Copies of a tick job: the same tick, run later by a job of its own.

A tick job that cannot run now but must not be lost becomes a copy — a new
RQ job with the same arguments and meta (so the same tick id, and so the
same run claim per attempt, claims.py) and an id of its own (RQ deletes the
original as soon as it returns: ``result_ttl=0``):

- **handed back** (``-h…``): its worker's site lost the lease between the
  worker's lease read and the fenced claim; the copy goes first in its queue
  for the new leader's workers;
- **buffered** (``-b…``): overlap='buffer_one' and a run of the entry is in
  progress; the copy is parked in ``{prefix}:buffered:{entry}`` and enqueued
  by the run when it ends (runner.py);
- **retried** (``-r<attempt>``): the run failed and the entry has retries
  left; the copy waits in ``{prefix}:retries`` until its time, when the
  leader's scheduler enqueues it (scheduler.py).

A copy that is not enqueued yet has RQ status ``scheduled`` and a TTL: it
goes by itself if nobody ever enqueues it.
"""

from __future__ import annotations

import secrets

from rq import Queue
from rq.job import Job, JobStatus

from .claims import CLAIM_SLACK_S, add_to_ledger

# How long RQ keeps a failed tick job (its hash, and a results stream with
# the traceback: ~6 KB) in its failed registry, for a look with `rq info`.
# Baton keeps each entry's last failure with its error text itself
# (runs.py); at 300 s a failing 1 s entry held 2.1 MB of RQ residue.
FAILED_JOB_TTL_S = 60

# Meta a copy must not inherit: who ran the original, under which term, and
# what the original was (a copy says for itself whether it is buffered).
_RUN_META = ("baton_site", "baton_token", "baton_reruns", "baton_buffered", "baton_claim_pipe")


def copy_id(tick_id: str, kind: str) -> str:
    """``h`` handed back, ``b`` buffered: random suffix (several may exist
    over a tick's life); retries are named by attempt (``r1``, ``r2``)."""
    return f"{tick_id}-{kind}" if kind.startswith("r") else f"{tick_id}-{kind}{secrets.token_hex(3)}"


def make_copy(job: Job, new_id: str, deadline: float, now: float, **meta) -> Job:
    """Save (not enqueue) a copy of ``job`` that expires past ``deadline``."""
    kept = {k: v for k, v in job.meta.items() if k not in _RUN_META}
    copy = Job.create(job.func_name, args=job.args, kwargs=job.kwargs, connection=job.connection, result_ttl=0,
                      ttl=max(1, int(deadline - now) + CLAIM_SLACK_S), failure_ttl=FAILED_JOB_TTL_S,
                      timeout=job.timeout, id=new_id, origin=job.origin, description=job.description,
                      meta={**kept, "baton_deadline": deadline, **meta}, status=JobStatus.SCHEDULED)
    copy.save()
    return copy


def enqueue_copy(connection, prefix: str, job_id: str, at_front: bool) -> Job | None:
    """Enqueue a saved copy with its ledger entry (one MULTI); None if it
    is gone (expired past its deadline)."""
    try:
        job = Job.fetch(job_id, connection=connection)
    except Exception:
        return None
    queue = Queue(job.origin, connection=connection)
    with connection.pipeline() as pipe:
        queue.enqueue_job(job, pipeline=pipe, at_front=at_front)
        add_to_ledger(pipe, prefix, job.id, job.origin, float(job.meta.get("baton_deadline") or 0))
        pipe.execute()
    return job
