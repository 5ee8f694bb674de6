"""A pool whose threads take turns on one connection (election/connection.py):
the scheduler, the watchdog and the presence writer of a site share it, so
a site's scheduler role costs one connection of a small plan's budget."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from election.connection import TakingTurnsSentinelConnectionPool, client, connection_pool


def _named(shared_redis, name):
    return [c for c in shared_redis.client().client_list() if c["name"] == name]


def test_threads_take_turns_on_one_connection(shared_redis, prefix):
    name = f"t:{uuid.uuid4().hex[:8]}:scheduler"
    shared = client(shared_redis.url, client_name=name, max_connections=1, turn_wait_s=10)
    pool = shared.connection_pool
    held = pool.get_connection()  # as a batch holds it from its build to its send
    done, seen, errors = [], [], []

    def writer(n):
        try:
            for i in range(50):
                shared.hset(f"{prefix}:h", f"{n}:{i}", i)
            done.append(n)
        except redis.RedisError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert done == [] and not errors  # they wait for the held connection, none fails
    seen.append(len(_named(shared_redis, name)))
    pool.release(held)
    for thread in threads:
        thread.join(timeout=30)
    seen.append(len(_named(shared_redis, name)))
    assert not errors and sorted(done) == [0, 1, 2, 3]
    assert shared_redis.client().hlen(f"{prefix}:h") == 200
    assert seen == [1, 1]
    shared.close()


def test_a_turn_that_never_comes_fails_as_a_redis_error(shared_redis):
    shared = client(shared_redis.url, max_connections=1, turn_wait_s=0.4)
    held = shared.connection_pool.get_connection()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="came free within 0.4 s"):
        shared.ping()
    assert 0.35 < time.monotonic() - started < 5
    shared.connection_pool.release(held)
    assert shared.ping()  # the pool is whole again
    shared.close()


def test_without_turns_a_pool_opens_what_its_threads_need(shared_redis):
    plain = connection_pool(shared_redis.url)
    first, second = plain.get_connection(), plain.get_connection()
    assert first is not second
    plain.release(first)
    plain.release(second)
    plain.disconnect()


def test_a_sentinel_url_takes_turns_too():
    pool = connection_pool("redis+sentinel://127.0.0.1:1/mymaster", max_connections=1, turn_wait_s=3)
    assert isinstance(pool, TakingTurnsSentinelConnectionPool)
    assert (pool.max_connections, pool.turn_wait_s) == (1, 3)
