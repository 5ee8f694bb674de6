"""The lease's server-side operations, as Lua run by EVALSHA.

Each one reads and writes in a single atomic step on the server, so two
candidates can never both see "no lease" and both write one, and a renewal or
release can never touch a lease that changed hands in between (compare-and-set
on ``holder`` *and* ``token``, never a blind EXPIRE or DEL).

Scripts take the server's clock from TIME (effects replication, the default
since Redis 5, allows it) so that every timestamp in the lease and its history
comes from one clock.
"""

from __future__ import annotations

from .record import REQUIRED_FIELDS

_NUMERIC_FIELDS = ("token", "acquired_at", "renewed_at", "ttl_ms")

# The server's clock in ms since the epoch, for every script that stamps or
# compares times.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Shared by ACQUIRE and READ: classifies what is at the lease key without
# changing it. Anything Baton did not write — another type, a hash missing a
# field, a lease with no TTL (someone typed SET or HSET by hand) — is reported
# as corrupt and left alone.
_INSPECT_LEASE = _NOW_MS + """
-- Decimal digits only, as Baton writes them: Lua's tonumber also takes
-- '1.5', '0x10', '1e3' and 'inf', which Python's int() (every reader of the
-- lease) refuses. 18 digits stay exact in Lua's doubles.
local function is_integer(value)
  return string.len(value) <= 18 and string.match(value, '^%%-?%%d+$') ~= nil
end

local function inspect_lease(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return {'none'} end
  local pttl = redis.call('PTTL', key)
  if kind ~= 'hash' then
    return {'corrupt', 'wrong type ' .. kind .. ' (expected hash)', pttl}
  end
  local flat = redis.call('HGETALL', key)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  for _, name in ipairs({%(required)s}) do
    if fields[name] == nil then return {'corrupt', 'missing field ' .. name, pttl} end
  end
  for _, name in ipairs({%(numeric)s}) do
    if not is_integer(fields[name]) then
      return {'corrupt', 'field ' .. name .. ' is not a whole number: ' .. string.sub(fields[name], 1, 40), pttl}
    end
  end
  if pttl < 0 then return {'corrupt', 'no TTL', pttl} end
  return {'held', pttl, flat, fields}
end
""" % {
    "required": ", ".join(f"'{name}'" for name in REQUIRED_FIELDS),
    "numeric": ", ".join(f"'{name}'" for name in _NUMERIC_FIELDS),
}

# Used by ACQUIRE; RELEASE reads the set. The waiters set says how many
# candidates a release must wake. BLPOP hands one pushed element to one blocked client, so
# a release that pushed a single signal would wake one follower and leave the
# others blocked — not leading, and not knowing who does — until the old
# lease's expiry. Each follower notes itself (score: when its wait ends, on
# the server clock) in the same ACQUIRE round trip that told it the lease is
# held, so this costs no extra command. Entries past their time are dropped;
# the key expires with its last entry. Junk at the key is never overwritten:
# registration skips it and RELEASE reports it (and still wakes one).
_WAITERS = """
local function note_waiter(waiters, holder, now, until_ms)
  local kind = redis.call('TYPE', waiters)['ok']
  if kind ~= 'zset' and kind ~= 'none' then return end
  redis.call('ZREMRANGEBYSCORE', waiters, '-inf', '(' .. now)
  redis.pcall('ZADD', waiters, until_ms, holder)  -- refused (OOM) when Redis is full: not noted, still correct
  local last = redis.call('ZRANGE', waiters, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', waiters, last[2]) end
end

local function forget_waiter(waiters, holder)
  if redis.call('TYPE', waiters)['ok'] == 'zset' then redis.call('ZREM', waiters, holder) end
end
"""

# Shared by every script that writes a key of its own beside the lease (the
# fence, the quarantine, the ready set): the key is of the type Baton writes,
# or absent; anything else is junk, returned as the script's 'corrupt' reply
# with its PTTL, and never overwritten.
_WRONG_TYPE = """
local function wrong_type(key, expected, described)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= expected then
    return {'corrupt', key, 'wrong type ' .. kind .. ' (expected ' .. described .. ')', redis.call('PTTL', key)}
  end
end
"""

# Readiness (election/readiness.py), shared by ACQUIRE and RENEW. A candidate
# that requires readiness counts as able to work while some member of its
# site (an RQ worker) has marked itself ready and its mark has not run out;
# the marks are a zset '<site>/<member>' -> until when, on the server clock,
# so no two clocks are compared. Junk at the key is never overwritten: it
# turns the requirement off (every site counts as ready — an election must
# not stop over it) and the markers report it.
_READINESS = """
local function site_ready(ready, site, now)
  local kind = redis.call('TYPE', ready)['ok']
  if kind == 'none' then return false end
  if kind ~= 'zset' then return true end
  local mine = site .. '/'
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', ready, '(' .. now, '+inf')) do
    if string.sub(member, 1, #mine) == mine then return true end
  end
  return false
end

-- Whether a candidate of another site is waiting for the lease (noted in the
-- waiters set, its wait not over) and ready: the one a candidate that is not
-- ready leaves the lease to.
local function ready_elsewhere(ready, waiters, site, now)
  if redis.call('TYPE', waiters)['ok'] ~= 'zset' then return false end
  for _, holder in ipairs(redis.call('ZRANGEBYSCORE', waiters, now, '+inf')) do
    local other = string.match(holder, '^([^/]+)/')
    if other and other ~= site and site_ready(ready, other, now) then return true end
  end
  return false
end
"""

# ACQUIRE — take the lease if nobody holds it, and publish the new term's
# site on the elected channel (PUBLISH needs no memory and no subscriber):
# workers waiting for their site to lead wake on it instead of polling.
# KEYS: lease, fence, history, waiters, elected channel, quarantine, ready.
# ARGV: holder, site, ttl_ms, token_floor, history_maxlen, waiter_grace_ms,
#       require_ready ('1' or '0').
# Replies:
#   {'acquired', token, now_ms, event, history_error, ready (1|0)}
#   {'held', pttl, field, value, ...}          someone else's lease, as HGETALL
#   {'unready', pttl, field, value, ...}       the same, to a candidate not ready (not noted as waiting)
#   {'deferred'}                               free, left to a ready candidate of another site that waits
#   {'quarantined', pttl, detail}              a failover was seen: no term starts yet
#   {'corrupt', key, problem, pttl}
#   {'oom', error}                             Redis is full: no term can start
# The quarantine is checked first and inside the script, so no candidate —
# one that saw the failover, one that did not, one that started since — can
# start a term while it lasts (QUARANTINE below).
# A candidate told 'held' is noted as a waiter until the lease's expiry plus
# waiter_grace_ms (the time it takes to come back and ask again).
# A lease already held by this very candidate (the reply to an earlier
# ACQUIRE was lost, or a demoted leader comes back) is taken again under a new
# token: nobody else can hold it, and a fresh token keeps "one term, one token".
# The fence counter only ever goes up, and never below token_floor — the
# highest token the caller has seen — so tokens keep increasing even if Redis
# lost its data (restart without persistence) while some candidate remembers.
# The history entry says 'takeover' when the previous term ended without a
# release or step-down, i.e. the lease expired under its holder.
# With require_ready, a candidate whose site is not ready (no live mark in
# the ready set) is never noted as waiting — a release wakes only those that
# can work — and takes a free lease only if no ready candidate of another
# site waits for it: a site that cannot work still leads when nobody else
# can (scheduling ticks that a worker may yet run is better than nothing).
ACQUIRE = _INSPECT_LEASE + _WAITERS + _WRONG_TYPE + _READINESS + """
local lease, fence, history, waiters, elected = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local holder, site, ttl_ms, floor, maxlen = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

local quarantine = KEYS[6]
local quarantine_kind = redis.call('TYPE', quarantine)['ok']
if quarantine_kind ~= 'none' then
  local pttl = redis.call('PTTL', quarantine)
  if quarantine_kind ~= 'string' then
    return {'corrupt', quarantine, 'wrong type ' .. quarantine_kind .. ' (expected string)', pttl}
  end
  if pttl < 0 then return {'corrupt', quarantine, 'no TTL', pttl} end
  return {'quarantined', pttl, redis.call('GET', quarantine)}
end

local state = inspect_lease(lease)
if state[1] == 'corrupt' then return {'corrupt', lease, state[2], state[3]} end
local ready = ARGV[7] ~= '1' or site_ready(KEYS[7], site, now_ms())
local event = 'acquired'
if state[1] == 'held' then
  if state[4]['holder'] ~= holder then
    local now = now_ms()
    local reply = {'held', state[2]}
    if ready then
      note_waiter(waiters, holder, now, now + state[2] + tonumber(ARGV[6]))
    else
      forget_waiter(waiters, holder)
      reply[1] = 'unready'
    end
    for _, v in ipairs(state[3]) do reply[#reply + 1] = v end
    return reply
  end
  event = 'reacquired'
end
-- (Its own lease, which a demoted leader finds on coming back, it takes
-- again: a RENEW hands it over with a release, waking the others at once.)
if event == 'acquired' and not ready and ready_elsewhere(KEYS[7], waiters, site, now_ms()) then
  forget_waiter(waiters, holder)
  return {'deferred'}
end

local fence_junk = wrong_type(fence, 'string', 'integer string')
if fence_junk then return fence_junk end
local token = redis.pcall('INCR', fence)
if type(token) == 'table' then
  -- INCR is the first write of a new term: a full Redis (maxmemory with
  -- noeviction) refuses it before anything changed. That is not junk.
  if string.sub(token['err'], 1, 3) == 'OOM' then return {'oom', token['err']} end
  return {'corrupt', fence, 'not an integer', redis.call('PTTL', fence)}
end
if token <= floor then
  token = floor + 1
  redis.call('SET', fence, token)
end

forget_waiter(waiters, holder)
local now = now_ms()
redis.call('HSET', lease, 'holder', holder, 'site', site, 'token', token,
           'acquired_at', now, 'renewed_at', now, 'ttl_ms', ttl_ms)
redis.call('PEXPIRE', lease, ttl_ms)
redis.call('PUBLISH', elected, site)

local entry = {'event', event, 'holder', holder, 'site', site, 'token', token}
if event == 'acquired' then
  local last = redis.pcall('XREVRANGE', history, '+', '-', 'COUNT', 1)
  if type(last) == 'table' and last[1] then
    local prev = {}
    local kv = last[1][2]
    for i = 1, #kv, 2 do prev[kv[i]] = kv[i + 1] end
    local prev_term_open = prev['event'] == 'acquired' or prev['event'] == 'takeover' or prev['event'] == 'reacquired'
    if prev_term_open and prev['holder'] ~= holder then
      entry[2] = 'takeover'
      entry[#entry + 1] = 'previous_holder'; entry[#entry + 1] = prev['holder']
      entry[#entry + 1] = 'previous_token'; entry[#entry + 1] = prev['token']
    end
  end
end
local added = redis.pcall('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(entry))
local history_error = ''
if type(added) == 'table' and added['err'] then history_error = added['err'] end
return {'acquired', token, now, entry[2], history_error, ready and 1 or 0}
"""

# RENEW — extend the lease, only if the caller still holds it under the same
# token. It must work when Redis is full (maxmemory with noeviction, where
# Redis refuses a script's first write if that command may need memory):
# PEXPIRE needs none and goes first, and once a script has written, Redis
# lets the rest of it run, so the HSET of renewed_at (an overwrite in place)
# follows; pcall keeps a refusal from costing the renewal anyway.
# Replies {'renewed', now_ms, ready, ready_elsewhere}, {'lost',
# current_holder_or_empty}, or {'step_down'} when an operator asked this
# holder to step down (the step-down key names it): the leader then demotes
# itself first and releases after, so a step-down asked from anywhere (a
# one-off dyno, another web worker) never makes two leaders.
# With require_ready, ready (1|0) says whether the leader's site still has a
# live mark in the ready set and, when it has not, ready_elsewhere (1|0)
# whether a ready candidate of another site waits: the leader then hands the
# lease over (elector.py). Both are reads, after the renewal's writes.
# KEYS: lease, step_down, ready, waiters.  ARGV: holder, token, ttl_ms, site, require_ready.
RENEW = _NOW_MS + _READINESS + """
local lease = KEYS[1]
if redis.call('TYPE', lease)['ok'] ~= 'hash' then return {'lost', ''} end
local current = redis.call('HMGET', lease, 'holder', 'token')
if current[1] ~= ARGV[1] or current[2] ~= ARGV[2] then
  return {'lost', current[1] or ''}
end
if redis.call('TYPE', KEYS[2])['ok'] == 'string' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return {'step_down'}
end
local now = now_ms()
redis.call('PEXPIRE', lease, ARGV[3])
redis.pcall('HSET', lease, 'renewed_at', now)
if ARGV[5] == '1' and not site_ready(KEYS[3], ARGV[4], now) then
  return {'renewed', now, 0, ready_elsewhere(KEYS[3], KEYS[4], ARGV[4], now) and 1 or 0}
end
return {'renewed', now, 1, 0}
"""

# RELEASE — delete the lease if the caller still holds it under the same
# token, and wake waiting candidates at once: one element per live waiter,
# at most max_woken (lease.MAX_WOKEN_PER_RELEASE) and at least one, for a
# candidate that did not note itself, pushed to the signal list their BLPOPs
# wait on. The signal gets a short TTL so
# elements nobody consumed (a waiter that has since gone) cannot pile up or
# wake someone much later; a candidate woken for nothing just asks once
# more. A stepped-down leader is recorded in the history even when the lease
# is no longer its own (it was lost).
# KEYS: lease, signal, history, waiters.
# ARGV: holder, token, event ('released' | 'stepped_down'), reason, signal_ttl_ms,
#       history_maxlen, max_woken.
# Replies {released 0|1, signal_error, history_error, waiters_error}.
RELEASE = _NOW_MS + """
local lease, signal, history, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local holder, token, event, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local released = 0
local signal_error, waiters_error = '', ''
if redis.call('TYPE', lease)['ok'] == 'hash' then
  local current = redis.call('HMGET', lease, 'holder', 'token')
  if current[1] == holder and current[2] == token then
    redis.call('DEL', lease)
    released = 1
    local count = 1
    local waiters_kind = redis.call('TYPE', waiters)['ok']
    if waiters_kind == 'zset' then
      redis.call('ZREMRANGEBYSCORE', waiters, '-inf', '(' .. now_ms())
      count = math.max(1, math.min(redis.call('ZCARD', waiters), tonumber(ARGV[7])))
    elseif waiters_kind ~= 'none' then
      waiters_error = 'wrong type ' .. waiters_kind .. ' (expected zset)'
    end
    local signal_kind = redis.call('TYPE', signal)['ok']
    if signal_kind == 'none' or signal_kind == 'list' then
      local signals = {}
      for i = 1, count do signals[i] = token end
      redis.call('DEL', signal)
      redis.call('LPUSH', signal, unpack(signals))
      redis.call('PEXPIRE', signal, ARGV[5])
    else
      signal_error = 'wrong type ' .. signal_kind .. ' (expected list)'
    end
  end
end
local history_error = ''
if released == 1 or event == 'stepped_down' then
  local added = redis.pcall('XADD', history, 'MAXLEN', '~', ARGV[6], '*',
                            'event', event, 'holder', holder, 'token', token, 'reason', reason)
  if type(added) == 'table' and added['err'] then history_error = added['err'] end
end
return {released, signal_error, history_error, waiters_error}
"""

# QUARANTINE — after a failover (a reconnect found another Redis server than
# before: elector.py), hold every election off for quarantine_ms and lift the
# fence counter to at least token_floor, so the terms that follow get tokens
# above every token the caller has seen (and above the ones the lost writes
# may have handed out: see elector.FAILOVER_TOKEN_STEP). Several sites see the
# same failover: the quarantine is only ever extended, the fence only raised.
# Junk at either key is reported, never overwritten.
# KEYS: quarantine, fence, history.
# ARGV: quarantine_ms, token_floor, detail, history_maxlen, site.
# Replies {'quarantined', pttl} or {'corrupt', key, problem, pttl}.
QUARANTINE = _WRONG_TYPE + """
local quarantine, fence, history = KEYS[1], KEYS[2], KEYS[3]
local ms, floor = tonumber(ARGV[1]), tonumber(ARGV[2])
local junk = wrong_type(quarantine, 'string', 'string')
if junk then return junk end
local fence_junk = wrong_type(fence, 'string', 'integer string')
if fence_junk then return fence_junk end
local pttl = redis.call('PTTL', quarantine)
if pttl < ms then
  redis.pcall('SET', quarantine, ARGV[3], 'PX', ms)
  pttl = ms
end
local current = tonumber(redis.call('GET', fence) or '0')
if current == nil then return {'corrupt', fence, 'not an integer', redis.call('PTTL', fence)} end
if current < floor then redis.pcall('SET', fence, floor) end
redis.pcall('XADD', history, 'MAXLEN', '~', ARGV[4], '*', 'event', 'quarantined', 'site', ARGV[5],
            'reason', 'redis_primary_changed', 'ms', ms, 'token_floor', floor)
return {'quarantined', pttl}
"""

# READ — the lease as it is, classified like ACQUIRE does, in one round trip.
# KEYS: lease. Replies {'none'}, {'held', pttl, field, value, ...} or
# {'corrupt', key, problem, pttl}.
READ = _INSPECT_LEASE + """
local state = inspect_lease(KEYS[1])
if state[1] == 'corrupt' then return {'corrupt', KEYS[1], state[2], state[3]} end
if state[1] == 'none' then return {'none'} end
local reply = {'held', state[2]}
for _, v in ipairs(state[3]) do reply[#reply + 1] = v end
return reply
"""

# MARK_READY — a member of a site (an RQ worker) says it can do the site's
# work for the next live_ms (election/readiness.py). Marks past their time are
# dropped first, so the set holds only the live ones; the key expires with
# its last mark. The ZREMRANGEBYSCORE needs no memory and goes first, so a
# full Redis (noeviction) still takes the mark of a member already there.
# It also answers which site holds the lease (a read, '' when free or junk):
# an idle worker of the leading site learns that it still leads from its
# mark, with no second command per beat.
# KEYS: ready, lease.  ARGV: '<site>/<member>', live_ms.
# Replies {'ready', until_ms, leader_site}, {'corrupt', key, problem, pttl} or {'refused', error}.
MARK_READY = _NOW_MS + _WRONG_TYPE + """
local ready = KEYS[1]
local junk = wrong_type(ready, 'zset', 'zset')
if junk then return junk end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', ready, '-inf', now)
local until_ms = now + tonumber(ARGV[2])
local added = redis.pcall('ZADD', ready, until_ms, ARGV[1])
if type(added) == 'table' and added['err'] then return {'refused', added['err']} end
local last = redis.call('ZRANGE', ready, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', ready, last[2])
local leader = redis.pcall('HGET', KEYS[2], 'site')
if type(leader) ~= 'string' then leader = '' end
return {'ready', until_ms, leader}
"""

# READY_MEMBERS — the live marks and the server's time, for /status: reply
# {'ready', now_ms, member, until_ms, ...} or {'corrupt', key, problem, pttl}.
# KEYS: ready.
READY_MEMBERS = _NOW_MS + _WRONG_TYPE + """
local ready = KEYS[1]
local junk = wrong_type(ready, 'zset', 'zset')
if junk then return junk end
local now = now_ms()
local reply = {'ready', now}
for _, v in ipairs(redis.call('ZRANGEBYSCORE', ready, '(' .. now, '+inf', 'WITHSCORES')) do
  reply[#reply + 1] = v
end
return reply
"""
