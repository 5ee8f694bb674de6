"""Errors the election reports rather than hides."""

from __future__ import annotations

from redis.exceptions import OutOfMemoryError, RedisError


class LeaseCorrupt(Exception):
    """A Baton key holds something Baton did not write (wrong type, missing
    fields, no TTL). Baton never overwrites it while it could still be
    someone's lease; an operator has to look at it.

    ``pttl_ms`` is the key's remaining time (-1: no expiry), so callers know
    whether waiting will clear it.
    """

    def __init__(self, key: str, problem: str, pttl_ms: int = -1):
        self.key = key
        self.problem = problem
        self.pttl_ms = pttl_ms
        if pttl_ms >= 0:
            self.fix = f"it expires in {pttl_ms} ms; inspect it with: redis-cli TYPE {key}"
        else:
            self.fix = f"it never expires; inspect it, then remove it: redis-cli DEL {key}"
        super().__init__(f"{key}: {problem} ({self.fix})")

    @classmethod
    def from_reply(cls, reply) -> "LeaseCorrupt":
        """From a script's ``{'corrupt', key, problem, pttl}`` reply (scripts.py)."""
        return cls(key=reply[1], problem=reply[2], pttl_ms=int(reply[3]))


class RedisFull(OutOfMemoryError):
    """Redis refused a write that needs memory: it reached ``maxmemory`` and
    its policy evicts nothing (``noeviction``, Heroku's Mini plan). No new
    term can start until memory is freed; a leader keeps renewing (its
    renewal needs none). A RedisError, so every retry loop handles it, and
    told apart from an outage by election.outage."""


class ReplicasBehind(RedisError):
    """A write was applied on the primary but not acknowledged by enough
    replicas within its time (``WAIT``; BATON_REDIS_REPLICAS_ACK): a failover
    now could lose it, so it does not count — no term starts on it, a renewal
    does not extend the term, no run starts on its claim. A RedisError, so
    every retry loop handles it like an outage."""

    def __init__(self, what: str, acked: int, wanted: int, timeout_ms: int):
        self.acked, self.wanted, self.timeout_ms = acked, wanted, timeout_ms
        super().__init__(f"{what}: {acked} of {wanted} replicas acknowledged within {timeout_ms} ms")
