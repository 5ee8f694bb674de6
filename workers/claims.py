"""Where a tick job stands in Redis between its enqueue and its run.

- The **ledger** ``{prefix}:ticks:unstarted`` (a hash: job id ->
  ``<queue>|<deadline>``, the deadline being the last moment the tick may
  start, tick + grace, in epoch seconds) lists tick jobs that are enqueued and
  not yet started. The scheduler adds a job in the same MULTI as its enqueue;
  the job leaves when it claims its tick or finds it too late. The leader's
  sweep (orphans.py) reads it to find jobs a dead worker took and never
  started, and to clear ticks that nobody started in time.
- The **run claim** ``{prefix}:ran:{tick id}`` (``SET NX``; a tick's id is
  ``{prefix}-{entry}-{epoch ms}``, its first job's id; a retry's is
  ``{tick id}-r{attempt}``), taken just before the entry's function runs,
  makes every attempt of a tick run at most once, even if it was enqueued
  twice, requeued while a frozen worker still held it, or copied (copies.py).
  It lives as long as a copy of the tick could still start: a copy starts
  only while the tick is within its grace (runner.py checks before it
  claims), so the claim expires ``CLAIM_SLACK_S`` after the tick's deadline.
- The claim is **fenced** and decides the tick's fate in one step (CLAIM
  below): the lease, the claim, a pause, the entry's running runs (its
  overlap policy) and the ledger, together.
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


# How long a run's mark in ``{prefix}:running:{entry}`` (``<token>|<job id>``)
# lives unless its lease watch renews it (every LEASE_WATCH_INTERVAL_S,
# runner.py): a worker that dies or freezes mid-run stops counting as running
# within this. Only runs of the current term count for overlap: the run of a
# site that crashed, or was cut off, must not hold back the next leader's
# ticks until its mark lapses (a cut-off run's writes are fenced).
RUNNING_MARK_TTL_MS = 5000

# CLAIM — decide, in one atomic step, whether this copy of a tick runs now.
# Atomic with the lease check: a worker that read the lease, then paused (GC,
# SIGSTOP, a slow fork) for longer than its site's term, cannot start a tick
# under its old token once another site leads — the read-then-claim window.
# KEYS: lease, run claim, ledger, paused, running (the entry's), buffered (the entry's).
# ARGV: site, token, job id, claim holder, claim ttl (s), entry, overlap policy,
#       running-mark ttl (ms), '1' for a manual run (not held back by a pause),
#       '1' if this copy is the entry's buffered tick (it may take the buffer slot's place).
# The ledger's HDELs are pcalls: a ledger typed by hand (the sweep reports
# it) must not stop a run.
# Replies (a list, the first item the verdict):
#   claimed — run it;  duplicate — another copy of this attempt ran or runs;
#   not_leader, <site>, <token> — the lease moved: hand the tick back, unclaimed;
#   paused — an operator paused the entry;
#   overlap, <running job id> — a run of the entry is in progress (skip or allow is the caller's
#     policy: 'allow' is never told overlap);
#   buffer — overlap under 'buffer_one' and the buffer slot is free: the caller parks the tick there.
CLAIM = """
local lease, claim, ledger, paused, running, buffered = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local site, token, job_id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('TYPE', lease).ok ~= 'hash' then return {'not_leader', '', ''} end
local held = redis.call('HMGET', lease, 'site', 'token')
if held[1] ~= site or held[2] ~= token then return {'not_leader', held[1] or '', held[2] or ''} end
if redis.call('EXISTS', claim) == 1 then redis.pcall('HDEL', ledger, job_id) return {'duplicate'} end
if ARGV[9] ~= '1' and redis.call('HEXISTS', paused, ARGV[6]) == 1 then
  redis.pcall('HDEL', ledger, job_id)
  return {'paused'}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', running, '-inf', now_ms)
local mine = token .. '|'
if ARGV[7] ~= 'allow' then
  local other = nil
  for _, member in ipairs(redis.call('ZRANGE', running, 0, -1)) do
    if string.sub(member, 1, #mine) == mine then other = string.sub(member, #mine + 1) break end
  end
  if other then
    redis.pcall('HDEL', ledger, job_id)
    if ARGV[7] == 'buffer_one' and (ARGV[10] == '1' or redis.call('EXISTS', buffered) == 0) then
      return {'buffer', other}
    end
    return {'overlap', other}
  end
end
redis.call('SET', claim, ARGV[4], 'NX', 'EX', ARGV[5])
redis.pcall('HDEL', ledger, job_id)
redis.call('ZADD', running, now_ms + tonumber(ARGV[8]), mine .. job_id)
redis.call('PEXPIRE', running, tonumber(ARGV[8]))
return {'claimed'}
"""

# WATCH — a running job's look at the lease, once per LEASE_WATCH_INTERVAL_S:
# does the lease still name its site and token? Renews the run's mark in the
# same call, so "is this entry running?" costs nothing extra.
# KEYS: lease, running.  ARGV: site, token, job id, running-mark ttl (ms).
# Replies 1 (still leading) or 0.
WATCH = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local mark = ARGV[2] .. '|' .. ARGV[3]
if redis.call('ZSCORE', KEYS[2], mark) then
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), mark)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
end
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local held = redis.call('HMGET', KEYS[1], 'site', 'token')
if held[1] == ARGV[1] and held[2] == ARGV[2] then return 1 end
return 0
"""

# FINISH — a run ended: drop its mark and take the buffered tick, if any (its
# job id), so the caller enqueues it. One step, so two runs ending at once
# never both take it.
# KEYS: running, buffered.  ARGV: job id, its token.
FINISH = """
redis.call('ZREM', KEYS[1], ARGV[2] .. '|' .. ARGV[1])
local waiting = redis.call('GET', KEYS[2])
if waiting then redis.call('DEL', KEYS[2]) end
return waiting
"""

# PARK — put a tick in its entry's buffer slot (overlap='buffer_one'), unless
# the run it waits for has ended meanwhile ('free': claim again) or another
# tick took the slot ('taken': this one is skipped). Atomic with FINISH, so a
# run that ends while a tick parks always finds it.
# KEYS: running, buffered.  ARGV: job id of the parked copy, its ttl (ms: until its deadline), the token.
PARK = """
local now = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local mine, running = ARGV[3] .. '|', false
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #mine) == mine then running = true break end
end
if not running then return 'free' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'parked' end
return 'taken'
"""


def claim_key_id(tick_id: str, attempt: int) -> str:
    """The run claim's id: one claim per attempt of a tick (retries are
    attempts 1, 2, ...; a copy handed back or buffered is the same attempt)."""
    return tick_id if attempt == 0 else f"{tick_id}-r{attempt}"


def claim(connection, prefix: str, *, site: str, token, job_id: str, claim_id: str, ttl_s: int, entry: str,
          overlap: str, manual: bool = False, buffered_copy: bool = False, replicas_ack=None) -> list:
    """Run CLAIM; returns its reply as a list of str (verdict first).

    ``replicas_ack`` = (n, timeout_s): the claim is followed by ``WAIT n`` on
    the same connection (a pipeline: WAIT counts that connection's writes),
    and a claim fewer than n replicas acknowledged in time comes back as
    ``["unreplicated", acked]`` — a failover could lose it and let another
    leader run the tick again, so the run must not start."""
    keys = Keys(prefix)
    script = connection.register_script(CLAIM)
    call = dict(
        keys=[keys.lease, keys.run_claim(claim_id), keys.ledger, keys.paused, keys.running(entry), keys.buffered(entry)],
        args=[site, str(token), job_id, f"{site}:{token}", ttl_s, entry, overlap, RUNNING_MARK_TTL_MS,
              "1" if manual else "0", "1" if buffered_copy else "0"])
    if not replicas_ack:
        reply = script(**call)
    else:
        wanted, timeout_s = int(replicas_ack[0]), float(replicas_ack[1])
        pipe = connection.pipeline(transaction=False)
        script(**call, client=pipe)
        pipe.execute_command("WAIT", wanted, max(1, int(timeout_s * 1000)))
        reply, acked = pipe.execute()
        if _text(reply[0]) == "claimed" and int(acked) < wanted:
            return ["unreplicated", str(acked)]
    return [_text(item) for item in reply]


def _text(item) -> str:
    return item.decode() if isinstance(item, bytes) else str(item)


def still_leading(connection, prefix: str, site: str, token, entry: str, job_id: str) -> bool:
    """WATCH: does the lease still name ``site`` and ``token``? (Renews the run's mark.)"""
    keys = Keys(prefix)
    return bool(connection.register_script(WATCH)(keys=[keys.lease, keys.running(entry)],
                                                 args=[site, str(token), job_id, RUNNING_MARK_TTL_MS]))


def finish(connection, prefix: str, entry: str, job_id: str, token):
    """Drop the run's mark; returns the buffered tick's job id, if one waits."""
    keys = Keys(prefix)
    waiting = connection.register_script(FINISH)(keys=[keys.running(entry), keys.buffered(entry)],
                                                 args=[job_id, str(token)])
    return waiting.decode() if isinstance(waiting, bytes) else waiting


def leave_ledger(connection, prefix: str, job_id: str) -> None:
    """A job that ends without a claim (its tick was too late) leaves the ledger."""
    try:
        connection.hdel(Keys(prefix).ledger, job_id)
    except ResponseError:
        pass  # a ledger typed by hand: the sweep reports it


def park(connection, prefix: str, entry: str, copy_id: str, ttl_ms: int, token) -> str:
    """PARK: 'parked', 'free' or 'taken'."""
    keys = Keys(prefix)
    reply = connection.register_script(PARK)(keys=[keys.running(entry), keys.buffered(entry)],
                                              args=[copy_id, max(1, int(ttl_ms)), str(token)])
    return reply.decode() if isinstance(reply, bytes) else reply
