"""One contender in its own process, for the cross-process handoff benchmark.

    python -m bench.handoff_child baton URL PREFIX NAME
    python -m bench.handoff_child redis_lock URL KEY NAME [EXPIRE_SECONDS]

Reads "release" lines on stdin; prints JSON lines with CLOCK_MONOTONIC times
(time.monotonic is system-wide on Linux, so the parent can compare them):
  {"event": "leading", "t": ...}        Baton: on_elected ran; redis-lock: acquire() returned
  {"event": "release_sent", "t": ...}   just before the release command goes out
Baton and python-redis-lock are driven the same way, each contender in its own
process as two sites would be, so neither pays for the other's GIL.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def emit(event: str, t: float) -> None:
    print(json.dumps({"event": event, "t": t}), flush=True)


def run_baton(url: str, prefix: str, name: str) -> None:
    from election import Callbacks, ElectionConfig, Elector, Identity, Lease

    class TimedLease(Lease):
        def release(self, *args, **kwargs):
            emit("release_sent", time.monotonic())
            return super().release(*args, **kwargs)

    # Default timings, except that a contender that stepped down re-enters the
    # race after 50 ms instead of 2 s, so rounds can follow each other quickly.
    config = ElectionConfig(step_down_hold_off=0.05)
    lease = TimedLease.from_url(url, Identity(site=name, dyno="bench"), config.ttl_ms, prefix=prefix)
    elector = Elector(lease, config, Callbacks(on_elected=lambda _t: emit("leading", time.monotonic()))).start()
    for line in sys.stdin:
        if line.strip() == "release":
            elector.step_down()
    elector.stop()


def run_redis_lock(url: str, key: str, name: str, expire: int = 10) -> None:
    import redis
    import redis_lock

    # redis-py 8's default 5 s socket timeout would cut the waiter's BLPOP.
    client = redis.Redis.from_url(url, socket_timeout=None)
    release_requested = threading.Event()

    def read_stdin():
        for line in sys.stdin:
            if line.strip() == "release":
                release_requested.set()
        # The parent is done. The contender may be blocked in acquire(), which
        # has no way out; the benchmark's keys are its own, so just leave.
        os._exit(0)

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        lock = redis_lock.Lock(client, key, expire=expire, auto_renewal=True)
        lock.acquire()
        emit("leading", time.monotonic())
        release_requested.wait()
        release_requested.clear()
        emit("release_sent", time.monotonic())
        lock.release()
        time.sleep(0.05)  # like Baton's hold-off: let the other contender win


if __name__ == "__main__":
    kind, url, key, name = sys.argv[1:5]
    if kind == "baton":
        run_baton(url, key, name)
    else:
        run_redis_lock(url, key, name, *(int(a) for a in sys.argv[5:6]))
