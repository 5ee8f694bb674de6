"""A tick that a shutdown interrupted goes back to its queue, if its entry
says so (``on_interrupt="rerun"``); so does a tick whose work horse died
before the job began (workers/worker.py: nothing of it ran).

The RQ worker that stopped the job does it, once RQ has filed the job as
failed: it drops the tick's run claim (taken by the run that was stopped, so
nobody else can hold it), lists the job in the ledger again (so the orphan
sweep looks after it, claims.py), and requeues it at the front of its queue
with RQ's own ``Job.requeue``. The next leader's worker runs it — if it is
still within its grace window; the run claim keeps it to one run from then
on. A job that keeps being interrupted is put back at most ``MAX_RERUNS``
times.
"""

from __future__ import annotations

import logging

from rq.job import JobStatus

from election import Keys
from election.logfmt import log_event

from .claims import add_to_ledger, claim_key_id

log = logging.getLogger("baton.worker")

# A tick interrupted this many times is not put back again: a job that never
# fits between two deploys must not be retried forever.
MAX_RERUNS = 3


# Why a tick goes back, as its log line says, and what to fix when it keeps
# going back (rerun_given_up).
INTERRUPTED = "interrupted by a shutdown; on_interrupt=rerun"
INTERRUPTED_FIX = "the job does not fit between two shutdowns: make it shorter, or raise BATON_SHUTDOWN_GRACE"
HORSE_LOST = "its work horse died before the job began (its run claim was never taken)"
HORSE_LOST_FIX = ("see why its work horse dies (RQ's lines before: Redis refusing new connections — "
                  "maxclients, a full connection plan — or the kernel's OOM killer)")


def rerun(connection, prefix: str, job, site: str = "", reason: str = INTERRUPTED,
          fix: str = INTERRUPTED_FIX) -> bool:
    """Put ``job`` (an RQ job that ended failed) back first in its queue.
    Returns False when it is not put back (it finished after all, or the
    bound is reached)."""
    if job.get_status(refresh=True) != JobStatus.FAILED:
        return False  # it caught the interrupt and finished: nothing to run again
    reruns = int(job.meta.get("baton_reruns", 0))
    if reruns >= MAX_RERUNS:
        log_event(log, logging.ERROR, "rerun_given_up", site=site, job_id=job.id, reruns=reruns, reason=reason,
                  fix=fix)
        return False
    keys = Keys(prefix)
    job.meta["baton_reruns"] = reruns + 1
    job.save_meta()
    tick, tick_id, grace = job.args[1], job.args[2], job.args[6]  # run_tick's arguments
    with connection.pipeline() as pipe:  # one MULTI
        pipe.delete(keys.run_claim(claim_key_id(tick_id, int(job.meta.get("baton_attempt") or 0))))
        add_to_ledger(pipe, prefix, job.id, job.origin, float(job.meta.get("baton_deadline") or tick + grace))
        pipe.execute()
    job.requeue(at_front=True)
    connection.persist(job.key)  # RQ gave the failed job an expiry; the sweep clears it if it never starts
    log_event(log, logging.WARNING, "tick_requeued", site=site, job_id=job.id, queue=job.origin,
              rerun=reruns + 1, reason=reason)
    return True
