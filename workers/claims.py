"""Where a tick job stands in Redis between its enqueue and its run.

- The **ledger** ``{prefix}:ticks:unstarted`` (a hash: job id ->
  ``<queue>|<deadline>``, the deadline being the last moment the tick may
  start, tick + grace, in epoch seconds) lists tick jobs that are enqueued and
  not yet started. The scheduler adds a job in the same MULTI as its enqueue;
  the job leaves when it claims its tick or finds it too late. The leader's
  sweep (orphans.py) reads it to find jobs a dead worker took and never
  started, and to clear ticks that nobody started in time.
- The **run claim** ``{prefix}:ran:{job id}`` (``SET NX``; a tick job's id
  is its tick's id, ``{prefix}-{entry}-{epoch ms}``), taken just before
  the entry's function runs, makes every tick run at most once, even if it was
  enqueued twice or requeued while a frozen worker still held it. It lives
  as long as a copy of the tick could still start: a copy starts only while
  the tick is within its grace (runner.py checks before it claims), so the
  claim expires ``CLAIM_SLACK_S`` after the tick's deadline.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from election import Keys

# A run claim outlives its tick's deadline by this much. The deadline is
# checked on the clock of whichever worker holds a copy of the tick, and the
# claim expires on Redis's: 5 minutes covers any clock skew between dynos
# many times over, at ~100 bytes per tick (a 1 s entry keeps ~300 claims).
CLAIM_SLACK_S = 300


def ledger_value(queue_name: str, deadline: float) -> str:
    return f"{queue_name}|{deadline:.3f}"


def parse_ledger_value(value: str) -> tuple:
    """(queue name, deadline or None). An entry written before deadlines
    were kept is just the queue name."""
    queue_name, _, deadline = value.partition("|")
    try:
        return queue_name, float(deadline) if deadline else None
    except ValueError:
        return queue_name, None


def add_to_ledger(pipe, prefix: str, job_id: str, queue_name: str, deadline: float) -> None:
    """Queue the ledger entry on the enqueue's own pipeline (one MULTI)."""
    pipe.hset(Keys(prefix).ledger, job_id, ledger_value(queue_name, deadline))


def claim_ttl(deadline: float, now: float) -> int:
    """Seconds a claim taken at ``now`` lives, for a tick due by ``deadline``."""
    return max(1, int(deadline - now) + CLAIM_SLACK_S)


def claim(connection, prefix: str, job_id: str, holder: str, ttl_s: int) -> bool:
    """Take the tick's run claim; True if this run is the one that runs it.

    The job leaves the ledger either way: claimed now or before, it is started.
    A ledger that is not a hash (typed by hand) does not stop the run; the
    sweep reports it.
    """
    with connection.pipeline(transaction=False) as pipe:
        keys = Keys(prefix)
        pipe.set(keys.run_claim(job_id), holder, nx=True, ex=ttl_s)
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
