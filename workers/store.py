"""The schedule in Redis, in rq-scheduler's store.

Each entry is an RQ job in status "scheduled" — the entry's *template*, with
id ``{prefix}-entry-{name}`` — listed in rq-scheduler's sorted set with its
next run time as the score. The set is per deployment
(``rq:scheduler:{prefix}:scheduled_jobs``) so that a stock ``rqscheduler``
pointed at the same Redis never enqueues Baton's templates.

Writing is idempotent by entry name: an unchanged entry keeps its next run
time (it survives restarts and failover), an edited one is rewritten and
rescheduled, one removed from the schedule is cancelled.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Dict, List, Tuple

from rq.job import Job
from rq_scheduler import Scheduler

from election import Keys

from .entries import Entry, rq_queue_name, stable_form
from .ticks import next_tick

# ADVANCE — move an entry's slot to its next time, but only if the slot is
# still where this scheduler read it (compare-and-set on the score), so two
# schedulers that were ever active at once cannot both advance one slot.
# KEYS: scheduled_jobs.  ARGV: template id, expected score, next score.  Replies 1 or 0.
ADVANCE = """
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or math.abs(tonumber(current) - tonumber(ARGV[2])) > 0.0005 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


def definition_hash(entry: Entry, zone_name: str) -> str:
    """What makes two versions of an entry the same schedule: the same in
    every process (entries.stable_form), so an unchanged entry is never
    rewritten — a rewrite resets its next run time, dropping ticks missed
    during a deploy.

    What each tick job carries in its own meta (``on_interrupt``,
    ``overlap``, ``retries``, ``retry_backoff``) is not part of it: changing
    those needs no rewrite of the template. ``zone_name`` is the zone the
    entry's cron is read in (its own ``timezone``, or BATON_TIMEZONE)."""
    spec = {
        "func": entry.func_path, "args": stable_form(list(entry.args)), "kwargs": stable_form(entry.kwargs),
        "cron": entry.cron, "every": entry.every, "queue": entry.queue, "timeout": entry.timeout,
        "missed": entry.missed, "grace": entry.grace, "on_lost_lease": entry.on_lost_lease,
        "zone": zone_name,
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _zone_name(zone) -> str:
    return getattr(zone, "key", str(zone))


class ScheduleStore:
    def __init__(self, connection, prefix: str, zone):
        self.connection = connection  # a redis.Redis without decode_responses (RQ's need)
        self.prefix = prefix
        self.zone = zone
        self.scheduler = Scheduler(connection=connection, queue_name=rq_queue_name(prefix, "baton"))
        self.scheduler.scheduled_jobs_key = Keys(prefix).scheduled_jobs
        self._advance = connection.register_script(ADVANCE)

    @property
    def key(self) -> str:
        return self.scheduler.scheduled_jobs_key

    def template_id(self, name: str) -> str:
        return f"{self.prefix}-entry-{name}"

    def _name_of(self, template_id: str) -> str:
        return template_id[len(self.prefix) + len("-entry-"):]

    def write(self, entries: List[Entry], now: float | None = None) -> Dict[str, str]:
        """Make the stored schedule equal ``entries``. Returns {name: what happened}."""
        now = time.time() if now is None else now
        stored = {job_id.decode(): score for job_id, score in self.connection.zrange(self.key, 0, -1, withscores=True)}
        outcome = {}
        wanted = set()
        for entry in entries:
            job_id = self.template_id(entry.name)
            wanted.add(job_id)
            zone_name = _zone_name(entry.zone(self.zone))
            digest = definition_hash(entry, zone_name)
            existing = None
            if job_id in stored:
                try:
                    existing = Job.fetch(job_id, connection=self.connection)
                except Exception:  # a template whose hash vanished or is unreadable: rewrite it
                    existing = None
            if existing is not None and existing.meta.get("baton_definition") == digest:
                outcome[entry.name] = "unchanged"
                continue
            meta = {
                "baton_entry": entry.name, "baton_definition": digest, "baton_timezone": zone_name,
                "missed": entry.missed, "grace": entry.grace, "on_lost_lease": entry.on_lost_lease,
            }
            if entry.cron:
                meta["cron_string"] = entry.cron
            else:
                meta["interval"] = entry.every
            job = self.scheduler._create_job(
                entry.func, args=entry.args, kwargs=entry.kwargs, id=job_id, queue_name=rq_queue_name(self.prefix, entry.queue),
                timeout=entry.timeout, meta=meta, result_ttl=-1, commit=True,
            )
            self.connection.zadd(self.key, {job.id: next_tick(entry, now, self.zone)})
            outcome[entry.name] = "updated" if job_id in stored else "added"
        for job_id in stored:
            if job_id not in wanted:
                self.scheduler.cancel(job_id)
                try:
                    Job.fetch(job_id, connection=self.connection).delete(remove_from_queue=False)
                except Exception:
                    pass
                outcome[self._name_of(job_id)] = "removed"
        return outcome

    def slots(self) -> List[Tuple[str, float]]:
        """(entry name, next run time) for every stored entry, soonest first."""
        return [(self._name_of(job_id.decode()), score)
                for job_id, score in self.connection.zrange(self.key, 0, -1, withscores=True)]

    def advance(self, name: str, expected: float, following: float) -> bool:
        return not self.advance_all([(name, expected, following)])

    def advance_all(self, moves) -> list:
        """Advance every ``(name, expected, following)`` in one round trip;
        returns the names whose slot another scheduler had moved."""
        moves = list(moves)
        with self.connection.pipeline(transaction=False) as pipe:
            for name, expected, following in moves:
                self._advance(keys=[self.key], args=[self.template_id(name), repr(expected), repr(following)],
                              client=pipe)
            replies = pipe.execute()
        return [name for (name, _e, _f), moved in zip(moves, replies) if not moved]
