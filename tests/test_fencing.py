"""Fenced writes against a real Redis."""

import pytest

from workers.fencing import fenced_set, highest_token


def test_a_stale_token_cannot_overwrite_a_newer_leaders_write(shared_redis, prefix):
    r = shared_redis.client()
    key = f"{prefix}:report"
    assert fenced_set(r, key, "from token 7", 7, prefix=prefix)
    assert fenced_set(r, key, "from token 9", 9, prefix=prefix)
    # The paused ex-leader (token 8) wakes up and tries to write.
    assert not fenced_set(r, key, "from token 8", 8, prefix=prefix)
    assert r.get(key) == "from token 9" and highest_token(r, key, prefix) == 9
    assert fenced_set(r, key, "again 9", 9, prefix=prefix)  # same term may write again
    assert fenced_set(r, key, "with ttl", 10, prefix=prefix, ttl_ms=5000)
    assert 0 < r.pttl(key) <= 5000


def test_a_token_is_required(shared_redis, prefix):
    with pytest.raises(ValueError, match="fencing token"):
        fenced_set(shared_redis.client(), f"{prefix}:k", "v", None, prefix=prefix)
