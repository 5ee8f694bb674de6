"""Ticks that a worker took off its queue and never started go back to it.

A worker that is killed (SIGKILL, a crashed dyno, an OOM kill) between taking
a tick job off the queue and claiming the tick leaves the job nowhere a worker
looks: in RQ's intermediate list, in the started registry of a dead execution,
or — when a worker listens on several queues and RQ pops with BLPOP — in no
list at all. RQ fails such a job minutes later at best; the tick is lost.

So every tick job is in a ledger from its enqueue until it claims its tick
(claims.py), and the leader's scheduler sweeps the ledger (``OrphanSweep``): a
job that is still unclaimed and no longer in its queue has been taken by a
worker; if that is still true ``STUCK_AFTER_S`` later, the worker is gone and
the job goes back to the front of its queue. A live worker needs milliseconds
from taking a job to claiming it, and a worker that was only frozen and wakes
up after the requeue finds the tick claimed by the copy that ran: the claim
keeps every tick at most once, so the sweep can afford to be quick.

A tick whose function had started (claimed) when its worker died is not run
again — at most once wins; RQ moves that job to its failed registry as
abandoned.

The same sweep clears ticks that nobody started by their deadline (tick +
grace, kept in the ledger): no worker consumes (all down, crash-looping, or
a worker dyno whose site never leads), so the queue, the ledger and the job
hashes would otherwise grow by one per tick. Each is recorded as an
``expired`` run (reason ``not_started``) and removed from its queue.

Cost: a sweep reads the ledger once and each of its queues once (LRANGE) —
O(N) in the backlog, a few commands whatever its size — and runs the atomic
checks below only for the few jobs not found in their queue, and for the
expired. A large backlog is swept less often (``SWEEP_DUTY``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict

from redis.exceptions import ResponseError
from rq import Queue
from rq.job import Job

from election import Keys
from election.logfmt import log_event

from .claims import parse_ledger_value
from . import tick_alerts
from .runs import record_run

log = logging.getLogger("baton.orphans")

# How long a job must stay taken-but-unclaimed, seen by two sweeps this far
# apart, before it counts as orphaned. A live worker takes milliseconds (one
# lease read, a fork, one SET NX); 3 s is far beyond that even on a loaded
# host, and keeps a crashed leader's tick within seconds of the takeover.
STUCK_AFTER_S = 3.0

# How often the leader looks when nothing is suspect: one HGETALL per sweep.
# Bounds how long an orphan waits when its worker died while the site kept
# the lease (an embedded worker restarted by its supervisor).
SWEEP_INTERVAL_S = 5.0

# A job that keeps losing its worker before it starts is requeued at most this
# many times, then left to RQ (and reported): a loop must never be endless.
MAX_REQUEUES = 3

# While the ledger was empty at the last sweep and this scheduler enqueued
# nothing since, the next sweep waits this long instead: an idle leader costs
# Redis one HGETALL a minute, not one every SWEEP_INTERVAL_S. (Its own
# worker's reruns, the only other writer during a term, wait at most this.)
IDLE_SWEEP_INTERVAL_S = 60.0

# A tick is cleared this long after its deadline, measured on the leader's
# clock: a worker on another dyno checks the same deadline on its own clock,
# and NTP keeps dynos within milliseconds; 30 s is far beyond that.
EXPIRE_SLACK_S = 30.0

# A sweep that took t seconds is not repeated for SWEEP_DUTY * t: the sweep
# of a 100k-tick backlog never takes more than ~2 % of Redis's time.
SWEEP_DUTY = 50


# SETTLE — decide, in one atomic step, where a ledger entry's job is, and
# requeue it if it was taken and never started. Atomic so that a job a worker
# pops or claims while the sweep looks is never pushed back beside it.
# KEYS: ledger, job hash, run claim, queue list, intermediate list, started registry.
# ARGV: job id, '1' if the caller saw it taken STUCK_AFTER_S ago (may requeue), max requeues.
# Replies: started | gone | ended (left the ledger), waiting (in its queue),
# taken (not in its queue, unclaimed), requeued, given_up (left to RQ).
SETTLE = """
local ledger, job, claim, queue, intermediate, started = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id = ARGV[1]
if redis.call('EXISTS', claim) == 1 then redis.call('HDEL', ledger, id) return 'started' end
local status = redis.call('HGET', job, 'status')
if not status then
  redis.call('HDEL', ledger, id)
  redis.call('LREM', queue, 1, id)  -- its hash expired (RQ's ttl) while queued: no id left behind
  return 'gone'
end
if status ~= 'queued' and status ~= 'started' then redis.call('HDEL', ledger, id) return 'ended' end
if redis.call('LPOS', queue, id) then return 'waiting' end
if ARGV[2] ~= '1' then return 'taken' end
if redis.call('HINCRBY', job, 'baton_requeues', 1) > tonumber(ARGV[3]) then
  redis.call('HDEL', ledger, id)
  return 'given_up'
end
redis.call('LREM', intermediate, 0, id)
local mine = id .. ':'
for _, member in ipairs(redis.call('ZRANGE', started, 0, -1)) do
  if string.sub(member, 1, #mine) == mine then redis.call('ZREM', started, member) end
end
redis.call('HSET', job, 'status', 'queued')
redis.call('LPUSH', queue, id)
return 'requeued'
"""

# EXPIRE_TICK — clear a tick nobody started by its deadline: out of the
# ledger, out of its queue (LREM from the head, where the oldest ticks are),
# its job hash deleted. Atomic, so a job a worker claims meanwhile is left be.
# KEYS: ledger, job hash, run claim, queue list.  ARGV: job id.
# Replies: started (claimed after all), ended (a worker has it), expired.
EXPIRE_TICK = """
local ledger, job, claim, queue = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
redis.call('HDEL', ledger, id)
if redis.call('EXISTS', claim) == 1 then return 'started' end
local status = redis.call('HGET', job, 'status')
if status and status ~= 'queued' then return 'ended' end
redis.call('LREM', queue, 1, id)
if status then redis.call('DEL', job) end
return 'expired'
"""


class OrphanSweep:
    """The leader's sweep of the ledger (see the module docstring).

    State is local and short-lived: when each suspect job was first seen
    taken, on this process's monotonic clock. ``restart()`` forgets it at
    every new term, so an observation from an earlier term never counts.
    """

    def __init__(self, connection, prefix: str, site: str = "", clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, alerts: bool = False):
        self.connection = connection  # RQ's: without decode_responses
        self.alerts = alerts  # raise tick_not_run alerts (alerts.py) for the ticks it clears
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.site = site
        self._clock = clock
        self._wall_clock = wall_clock
        self._settle = connection.register_script(SETTLE)
        self._expire = connection.register_script(EXPIRE_TICK)
        self._taken_since: Dict[str, float] = {}
        self._next_sweep = 0.0
        self._junk_reported = False
        self.requeued = 0
        self.expired = 0
        self.last_sweep_s = 0.0

    def restart(self) -> None:
        """A new term: sweep at once, from no observations."""
        self._taken_since.clear()
        self._next_sweep = 0.0

    def note_enqueued(self) -> None:
        """The scheduler enqueued ticks: sweep at the normal pace again."""
        self._next_sweep = min(self._next_sweep, self._clock() + SWEEP_INTERVAL_S)

    def due_in(self) -> float:
        """Seconds until the next sweep is due (0 if it is)."""
        return max(0.0, self._next_sweep - self._clock())

    def sweep_if_due(self) -> float:
        """Sweep if it is time; return the seconds until the next sweep."""
        if self.due_in() == 0.0:
            self.sweep()
        return self.due_in()

    def sweep(self) -> Dict[str, str]:
        """Look at every ledger entry once; returns {job id: what was found}:
        ``waiting`` (in its queue), or SETTLE's or EXPIRE_TICK's reply."""
        now, started = self._clock(), time.monotonic()
        self._next_sweep = now + SWEEP_INTERVAL_S
        try:
            ledger = self.connection.hgetall(self.keys.ledger)
        except ResponseError as exc:  # WRONGTYPE: someone wrote the key by hand
            self.report_junk(exc)
            return {}
        self._junk_reported = False
        entries = {_text(job_id): parse_ledger_value(_text(value)) for job_id, value in ledger.items()}
        self._taken_since = {j: t for j, t in self._taken_since.items() if j in entries}
        if not entries:
            self._next_sweep = now + IDLE_SWEEP_INTERVAL_S
            return {}
        cutoff = self._wall_clock() - EXPIRE_SLACK_S
        expired = {j: q for j, (q, deadline) in entries.items() if deadline is not None and deadline < cutoff}
        live = {j: q for j, (q, _deadline) in entries.items() if j not in expired}
        outcome = self._settle_missing(live, now)
        outcome.update(self._expire_all(expired))
        if self._taken_since:
            self._next_sweep = min(self._next_sweep, min(self._taken_since.values()) + STUCK_AFTER_S)
        self.last_sweep_s = time.monotonic() - started
        self._next_sweep = max(self._next_sweep, now + SWEEP_DUTY * self.last_sweep_s)
        return outcome

    def _settle_missing(self, live: Dict[str, str], now: float) -> Dict[str, str]:
        """SETTLE the live entries that are not in their queue (one LRANGE per queue)."""
        if not live:
            return {}
        names = sorted(set(live.values()))
        with self.connection.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.lrange(Queue(name, connection=self.connection).key, 0, -1)
            listed = dict(zip(names, pipe.execute(raise_on_error=False)))
        waiting = {name: set() if isinstance(ids, Exception) else {_text(i) for i in ids}
                   for name, ids in listed.items()}
        missing = [(j, q) for j, q in live.items() if j not in waiting[q]]
        missing_ids = {j for j, _q in missing}
        self._taken_since = {j: t for j, t in self._taken_since.items() if j in missing_ids}
        outcome = {j: "waiting" for j in live if j not in missing_ids}
        if not missing:
            return outcome
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id, queue_name in missing:
                seen = self._taken_since.get(job_id)
                may_requeue = seen is not None and now - seen >= STUCK_AFTER_S
                self._settle(keys=self._keys(job_id, queue_name), args=[job_id, "1" if may_requeue else "0", MAX_REQUEUES],
                             client=pipe)
            replies = pipe.execute(raise_on_error=False)
        for (job_id, queue_name), reply in zip(missing, replies):
            if isinstance(reply, Exception):
                log_event(log, logging.WARNING, "orphan_check_failed", job_id=job_id, queue=queue_name,
                          error=f"{type(reply).__name__}: {reply}")
                continue
            outcome[job_id] = state = _text(reply)
            if state == "taken":
                self._taken_since.setdefault(job_id, now)
                continue
            self._taken_since.pop(job_id, None)
            if state == "requeued":
                self.requeued += 1
                log_event(log, logging.WARNING, "orphan_requeued", site=self.site, job_id=job_id, queue=queue_name,
                          reason="taken_by_a_worker_that_never_started_it")
            elif state == "given_up":
                log_event(log, logging.ERROR, "orphan_given_up", site=self.site, job_id=job_id, queue=queue_name,
                          requeues=MAX_REQUEUES, fix="see the worker logs: it dies before the job starts")
        return outcome

    def _expire_all(self, expired: Dict[str, str]) -> Dict[str, str]:
        """Clear ticks past their deadline, and record each as not started."""
        if not expired:
            return {}
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id, queue_name in expired.items():
                self._expire(keys=self._keys(job_id, queue_name)[:4], args=[job_id], client=pipe)
            replies = pipe.execute(raise_on_error=False)
        outcome, cleared = {}, []
        for (job_id, queue_name), reply in zip(expired.items(), replies):
            if isinstance(reply, Exception):
                log_event(log, logging.WARNING, "expiry_failed", job_id=job_id, queue=queue_name,
                          error=f"{type(reply).__name__}: {reply}")
                continue
            outcome[job_id] = state = _text(reply)
            if state == "expired":
                cleared.append(job_id)
        for job_id in cleared:
            entry, tick = self._entry_and_tick(job_id)
            record_run(self.connection, self.prefix, entry, tick=tick, site=self.site, outcome="expired",
                       reason="not_started", job_id=job_id)
            if self.alerts:
                tick_alerts.entry_not_run(self.connection, self.prefix, entry, reason="not_started", tick=tick,
                                          site=self.site)
        if cleared:
            self.expired += len(cleared)
            log_event(log, logging.WARNING, "ticks_expired_unstarted", site=self.site, count=len(cleared),
                      first=cleared[0], reason="no worker started them within their grace",
                      fix="check that a worker of the leading site runs (/status: workers)")
        return outcome

    def _entry_and_tick(self, job_id: str) -> tuple:
        """A tick job's id is ``{prefix}-{entry}-{epoch ms}`` (ticks.tick_id)."""
        name, _, millis = job_id[len(self.prefix) + 1:].rpartition("-")
        try:
            return name, int(millis) / 1000
        except ValueError:
            return job_id, None

    def _keys(self, job_id: str, queue_name: str):
        queue = Queue(queue_name, connection=self.connection)
        return [self.keys.ledger, Job.key_for(job_id), self.keys.run_claim(job_id), queue.key,
                queue.intermediate_queue_key, queue.started_job_registry.key]

    def report_junk(self, exc: Exception) -> None:
        """Log once (until the ledger reads again) that the ledger key is not a hash."""
        if not self._junk_reported:
            log_event(log, logging.ERROR, "ledger_unreadable", key=self.keys.ledger, error=str(exc),
                      fix=f"DEL {self.keys.ledger}; Baton rebuilds it as a hash (until then a dead worker's tick is not requeued)")
            self._junk_reported = True


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
