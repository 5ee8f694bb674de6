"""One contender in its own process, for the cross-process handoff benchmark.

    python -m bench.handoff_child baton URL PREFIX NAME
    python -m bench.handoff_child redis_lock URL KEY NAME [EXPIRE_SECONDS]

Reads lines on stdin: "release" gives the lock up and stays out of the race;
"compete" enters it again (the parent says so once the other contender leads,
so a stalled machine can never let the releaser win its own lock back).
Prints JSON lines with CLOCK_MONOTONIC times (time.monotonic is system-wide on
Linux, so the parent can compare them):
  {"event": "leading", "t": ...}        Baton: on_elected ran; redis-lock: acquire() returned
  {"event": "release_sent", "t": ...}   just before the release command goes out
Baton and python-redis-lock are driven the same way, each contender in its own
process as two sites would be, so neither pays for the other's GIL.
"""

from __future__ import annotations

import json
import os
import queue
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

    # Default timings. A release is stop(), as on a dyno's SIGTERM: demote,
    # release, wake the waiters; "compete" starts a new elector.
    config = ElectionConfig()
    identity = Identity(site=name, dyno="bench")
    callbacks = Callbacks(on_elected=lambda _t: emit("leading", time.monotonic()))

    def compete() -> Elector:
        lease = TimedLease.from_url(url, identity, config.ttl_ms, prefix=prefix)
        return Elector(lease, config, callbacks).start()

    elector = compete()
    for line in sys.stdin:
        command = line.strip()
        if command == "release":
            elector.stop()
        elif command == "compete":
            elector = compete()
    elector.stop()


def run_redis_lock(url: str, key: str, name: str, expire: int = 10) -> None:
    import redis
    import redis_lock

    # redis-py 8's default 5 s socket timeout would cut the waiter's BLPOP.
    client = redis.Redis.from_url(url, socket_timeout=None)
    commands: "queue.Queue[str]" = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            commands.put(line.strip())
        # The parent is done. The contender may be blocked in acquire(), which
        # has no way out; the benchmark's keys are its own, so just leave.
        os._exit(0)

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        lock = redis_lock.Lock(client, key, expire=expire, auto_renewal=True)
        lock.acquire()
        emit("leading", time.monotonic())
        while commands.get() != "release":
            pass  # "compete" while competing: nothing to do
        emit("release_sent", time.monotonic())
        lock.release()
        while commands.get() != "compete":
            pass  # "release" while out of the race: nothing to give up


if __name__ == "__main__":
    kind, url, key, name = sys.argv[1:5]
    if kind == "baton":
        run_baton(url, key, name)
    else:
        run_redis_lock(url, key, name, *(int(a) for a in sys.argv[5:6]))
