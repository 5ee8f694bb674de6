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

# Shared by ACQUIRE and READ: classifies what is at the lease key without
# changing it. Anything Baton did not write — another type, a hash missing a
# field, a lease with no TTL (someone typed SET or HSET by hand) — is reported
# as corrupt and left alone.
_INSPECT_LEASE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
    if tonumber(fields[name]) == nil then return {'corrupt', 'non-numeric field ' .. name, pttl} end
  end
  if pttl < 0 then return {'corrupt', 'no TTL', pttl} end
  return {'held', pttl, flat, fields}
end
""" % {
    "required": ", ".join(f"'{name}'" for name in REQUIRED_FIELDS),
    "numeric": ", ".join(f"'{name}'" for name in _NUMERIC_FIELDS),
}

# ACQUIRE — take the lease if nobody holds it.
# KEYS: lease, fence, history.  ARGV: holder, site, ttl_ms, token_floor, history_maxlen.
# Replies:
#   {'acquired', token, now_ms, event, history_error}
#   {'held', pttl, field, value, ...}          someone else's lease, as HGETALL
#   {'corrupt', key, problem, pttl}
# A lease already held by this very candidate (the reply to an earlier
# ACQUIRE was lost, or a demoted leader comes back) is taken again under a new
# token: nobody else can hold it, and a fresh token keeps "one term, one token".
# The fence counter only ever goes up, and never below token_floor — the
# highest token the caller has seen — so tokens keep increasing even if Redis
# lost its data (restart without persistence) while some candidate remembers.
# The history entry says 'takeover' when the previous term ended without a
# release or step-down, i.e. the lease expired under its holder.
ACQUIRE = _INSPECT_LEASE + """
local lease, fence, history = KEYS[1], KEYS[2], KEYS[3]
local holder, site, ttl_ms, floor, maxlen = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

local state = inspect_lease(lease)
if state[1] == 'corrupt' then return {'corrupt', lease, state[2], state[3]} end
local event = 'acquired'
if state[1] == 'held' then
  if state[4]['holder'] ~= holder then
    local reply = {'held', state[2]}
    for _, v in ipairs(state[3]) do reply[#reply + 1] = v end
    return reply
  end
  event = 'reacquired'
end

local fence_kind = redis.call('TYPE', fence)['ok']
if fence_kind ~= 'none' and fence_kind ~= 'string' then
  return {'corrupt', fence, 'wrong type ' .. fence_kind .. ' (expected integer string)', redis.call('PTTL', fence)}
end
local token = redis.pcall('INCR', fence)
if type(token) == 'table' then
  return {'corrupt', fence, 'not an integer', redis.call('PTTL', fence)}
end
if token <= floor then
  token = floor + 1
  redis.call('SET', fence, token)
end

local now = now_ms()
redis.call('HSET', lease, 'holder', holder, 'site', site, 'token', token,
           'acquired_at', now, 'renewed_at', now, 'ttl_ms', ttl_ms)
redis.call('PEXPIRE', lease, ttl_ms)

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
return {'acquired', token, now, entry[2], history_error}
"""

# RENEW — extend the lease, only if the caller still holds it under the same
# token. Replies {'renewed', now_ms}, {'lost', current_holder_or_empty}, or
# {'step_down'} when an operator asked this holder to step down (the
# step-down key names it): the leader then demotes itself first and releases
# after, so a step-down asked from anywhere (a one-off dyno, another web
# worker) never makes two leaders.
# KEYS: lease, step_down.  ARGV: holder, token, ttl_ms.
RENEW = """
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
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', lease, 'renewed_at', now)
redis.call('PEXPIRE', lease, ARGV[3])
return {'renewed', now}
"""

# RELEASE — delete the lease if the caller still holds it under the same
# token, and wake one waiting candidate at once by pushing to the signal list
# its BLPOP waits on. The signal gets a short TTL so a signal nobody consumed
# cannot pile up or wake someone much later. A stepped-down leader is recorded
# in the history even when the lease is no longer its own (it was lost).
# KEYS: lease, signal, history.
# ARGV: holder, token, event ('released' | 'stepped_down'), reason, signal_ttl_ms, history_maxlen.
# Replies {released 0|1, signal_error, history_error}.
RELEASE = """
local lease, signal, history = KEYS[1], KEYS[2], KEYS[3]
local holder, token, event, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local released = 0
local signal_error = ''
if redis.call('TYPE', lease)['ok'] == 'hash' then
  local current = redis.call('HMGET', lease, 'holder', 'token')
  if current[1] == holder and current[2] == token then
    redis.call('DEL', lease)
    released = 1
    local signal_kind = redis.call('TYPE', signal)['ok']
    if signal_kind == 'none' or signal_kind == 'list' then
      redis.call('DEL', signal)
      redis.call('LPUSH', signal, token)
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
return {released, signal_error, history_error}
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
