"""Fenced writes (Kleppmann's pattern): a write carries the writer's fencing
token, and the store refuses it if it has already seen a newer token.

A leader can be paused (GC, SIGSTOP, a slow disk) long enough for its lease to
pass to another site; when it resumes, its job may still try to write. With
``fenced_set`` that late write is rejected instead of clobbering the newer
leader's result::

    from workers.context import current_run
    from workers.fencing import fenced_set

    def publish_report():
        run = current_run()
        report = build_report()
        if not fenced_set(run.connection, "reports:latest", report, run.token):
            log.info("a newer leader already wrote reports:latest; dropped ours")
"""

from __future__ import annotations

from election import Keys

# FENCED_SET — write the value only if the token is >= the highest token this
# key has seen, and remember the new high-water mark, in one atomic step.
# The mark is a key of its own beside the data (``Keys.fence_mark``), so the
# data key stays a plain string anyone can GET, and the mark expires with
# the data (plus FENCE_MARK_SLACK_MS): marks of data that is gone do not pile
# up. Marks once kept in one hash for all keys (``Keys.fence_marks``) are
# still honoured, and moved out of it at the key's next write.
# KEYS: key, mark, old marks hash.  ARGV: value, token, ttl_ms (0: none), slack_ms.
# Replies {1, token} or {0, highest}.
FENCED_SET = """
local key, mark, old_marks = KEYS[1], KEYS[2], KEYS[3]
local token, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local highest = tonumber(redis.call('GET', mark) or '0')
if redis.call('TYPE', old_marks)['ok'] == 'hash' then
  highest = math.max(highest, tonumber(redis.call('HGET', old_marks, key) or '0'))
end
if token < highest then return {0, highest} end
if ttl > 0 then
  redis.call('SET', key, ARGV[1], 'PX', ttl)
  redis.call('SET', mark, token, 'PX', ttl + tonumber(ARGV[4]))
else
  redis.call('SET', key, ARGV[1])
  redis.call('SET', mark, token)
end
if redis.call('TYPE', old_marks)['ok'] == 'hash' then redis.call('HDEL', old_marks, key) end
return {1, token}
"""

# A mark outlives its data by this much: a leader frozen while the data
# expired still finds the mark when it wakes up within the hour.
FENCE_MARK_SLACK_MS = 3600 * 1000


def fenced_set(connection, key: str, value, token: int, prefix: str = "baton", ttl_ms: int = 0) -> bool:
    """SET ``key`` to ``value`` unless a write with a newer token got there
    first. Returns True if written. ``connection`` is a redis.Redis."""
    if token is None or int(token) < 1:
        raise ValueError("fenced_set needs the fencing token the job runs under (>= 1)")
    keys = Keys(prefix)
    written, _highest = connection.eval(FENCED_SET, 3, key, keys.fence_mark(key), keys.fence_marks, value,
                                        int(token), int(ttl_ms), FENCE_MARK_SLACK_MS)
    return bool(written)


def highest_token(connection, key: str, prefix: str = "baton") -> int:
    """The newest token that has written ``key`` (0 if none)."""
    keys = Keys(prefix)
    with connection.pipeline(transaction=False) as pipe:
        pipe.get(keys.fence_mark(key))
        pipe.hget(keys.fence_marks, key)
        mark, old = pipe.execute(raise_on_error=False)
    return max(int(v) for v in (mark, old, 0) if v is not None and not isinstance(v, Exception))
