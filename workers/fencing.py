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
# The mark lives in a hash beside the data (one field per fenced key), so the
# data key itself stays a plain string anyone can GET.
# KEYS: key, marks.  ARGV: value, token, [ttl_ms].  Replies {1, token} or {0, highest}.
FENCED_SET = """
local key, marks = KEYS[1], KEYS[2]
local token = tonumber(ARGV[2])
local highest = tonumber(redis.call('HGET', marks, key) or '0')
if token < highest then return {0, highest} end
redis.call('HSET', marks, key, token)
if ARGV[3] and tonumber(ARGV[3]) > 0 then
  redis.call('SET', key, ARGV[1], 'PX', ARGV[3])
else
  redis.call('SET', key, ARGV[1])
end
return {1, token}
"""


def fenced_set(connection, key: str, value, token: int, prefix: str = "baton", ttl_ms: int = 0) -> bool:
    """SET ``key`` to ``value`` unless a write with a newer token got there
    first. Returns True if written. ``connection`` is a redis.Redis."""
    if token is None or int(token) < 1:
        raise ValueError("fenced_set needs the fencing token the job runs under (>= 1)")
    written, _highest = connection.eval(FENCED_SET, 2, key, Keys(prefix).fence_marks, value, int(token), int(ttl_ms))
    return bool(written)


def highest_token(connection, key: str, prefix: str = "baton") -> int:
    """The newest token that has written ``key`` (0 if none)."""
    value = connection.hget(Keys(prefix).fence_marks, key)
    return int(value) if value is not None else 0
