"""Where a tick job stands in Redis between its enqueue and its run.

- The **ledger** ``{prefix}:ticks:unstarted`` (a hash: job id -> queue name)
  lists tick jobs that are enqueued and not yet started. The scheduler adds a
  job in the same MULTI as its enqueue; the job leaves when it claims its tick
  or finds it too late. The leader's sweep (orphans.py) reads it to find jobs a
  dead worker took and never started.
- The **run claim** ``{prefix}:ran:{job id}`` (``SET NX``; a tick job's id
  is its tick's id, ``{prefix}-{entry}-{epoch ms}``), taken just before
  the entry's function runs, makes every tick run at most once, even if it was
  enqueued twice or requeued while a frozen worker still held it.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from election import Keys

# How long a run claim is kept: far longer than any grace window, so a late
# duplicate of the tick still finds it.
RUN_CLAIM_TTL_S = 7 * 24 * 3600


def add_to_ledger(pipe, prefix: str, job_id: str, queue_name: str) -> None:
    """Queue the ledger entry on the enqueue's own pipeline (one MULTI)."""
    pipe.hset(Keys(prefix).ledger, job_id, queue_name)


def claim(connection, prefix: str, job_id: str, holder: str) -> bool:
    """Take the tick's run claim; True if this run is the one that runs it.

    The job leaves the ledger either way: claimed now or before, it is started.
    A ledger that is not a hash (typed by hand) does not stop the run; the
    sweep reports it.
    """
    with connection.pipeline(transaction=False) as pipe:
        keys = Keys(prefix)
        pipe.set(keys.run_claim(job_id), holder, nx=True, ex=RUN_CLAIM_TTL_S)
        pipe.hdel(keys.ledger, job_id)
        claimed, _ = pipe.execute(raise_on_error=False)
    if isinstance(claimed, Exception):
        raise claimed
    return bool(claimed)


def leave_ledger(connection, prefix: str, job_id: str) -> None:
    """A job that ends without a claim (its tick was too late) leaves the ledger."""
    try:
        connection.hdel(Keys(prefix).ledger, job_id)
    except ResponseError:
        pass  # a ledger typed by hand: the sweep reports it
