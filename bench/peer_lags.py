"""Failover figures of the peers Baton is compared with, measured the way
Baton's are: real processes, the same loopback Redis, one run.

- python-redis-lock 4.0.1 with auto-renewal: the holder process is frozen
  (SIGSTOP: renewals stop, nothing is released); lag = the lock key's expiry →
  the waiter's acquire() returns.
- rq-scheduler 0.14: two `rqscheduler -i 1` processes. Its lock
  `rq:scheduler_lock` is taken for one poll pass (SET NX EX interval+10) and
  deleted after it, so "leadership" is simply who makes the next pass.
  Handoff: SIGTERM to the scheduler that made the last pass → the survivor's
  next pass. Expiry lag: a scheduler that crashed mid-pass leaves the lock
  behind for interval+10 s; we set it exactly as acquire_lock() does
  (catching a real SIGKILL inside a millisecond pass is not reliable) and
  measure its expiry → the survivor's next pass.
A pass is observed from the scheduler's own --verbose log line "Acquired
Lock", stamped when the parent reads it (a pipe adds well under 1 ms, against
lags of seconds).
"""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import redis
import redis_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RQ_LOCK_KEY = "rq:scheduler_lock"


def redis_lock_expiry_lag(url: str, rounds: int, expire: int = 1) -> list:
    """Lock key expired → the blocked waiter's acquire() returns (ms)."""
    admin = redis.Redis.from_url(url)
    rng = random.Random(7)
    # redis-py 8's default 5 s socket timeout would cut the waiter's BLPOP.
    waiter_client = redis.Redis.from_url(url, socket_timeout=None)
    samples = []
    for i in range(rounds):
        key = f"bench-rl-expiry-{i}"
        holder = subprocess.Popen(
            [sys.executable, "-m", "bench.handoff_child", "redis_lock", url, key, "holder", str(expire)],
            # Its renewal thread raises NotAcquired once the waiter has the
            # lock (python-redis-lock #85): expected here, so not printed.
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            if "leading" not in holder.stdout.readline():
                raise RuntimeError("python-redis-lock holder did not start")
            acquired_at = []
            waiter = redis_lock.Lock(waiter_client, key, expire=expire, auto_renewal=True)
            # Random phases: the waiter's BLPOP cycle and the holder's renewal
            # cycle would otherwise stay locked together and every round
            # would sample the same point of them.
            time.sleep(rng.uniform(0, expire))
            thread = threading.Thread(target=lambda: waiter.acquire() and acquired_at.append(time.monotonic()))
            thread.start()
            time.sleep(rng.uniform(0.05, expire))
            os.kill(holder.pid, signal.SIGSTOP)
            time.sleep(0.01)
            pttl = admin.pttl(key)
            expires_at = time.monotonic() + pttl / 1000
            thread.join(expire * 10 + 5)
            if not acquired_at:
                raise RuntimeError("python-redis-lock waiter never acquired")
            samples.append((acquired_at[0] - expires_at) * 1000)
            waiter.release()
        finally:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.wait(5)
    admin.close()
    waiter_client.close()
    return samples


class _Rqscheduler:
    def __init__(self, url: str, interval: float):
        exe = shutil.which("rqscheduler", path=os.path.dirname(sys.executable)) or "rqscheduler"
        self.proc = subprocess.Popen(
            [exe, "--url", url, "-i", str(interval), "--verbose"],
            env={**os.environ, "TZ": "UTC"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.passes: "queue.Queue" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if "Acquired Lock" in line:
                self.passes.put(time.monotonic())

    def drain(self):
        while not self.passes.empty():
            self.passes.get_nowait()

    def next_pass(self, timeout: float) -> float:
        return self.passes.get(timeout=timeout)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def rq_scheduler_handoff(url: str, rounds: int, interval: float = 1.0) -> list:
    """SIGTERM to the scheduler that made the last pass → the survivor's next pass (ms)."""
    schedulers = [_Rqscheduler(url, interval), _Rqscheduler(url, interval)]
    samples = []
    try:
        for _ in range(rounds):
            for s in schedulers:  # both up and passing
                s.next_pass(interval * 5 + 10)
            for s in schedulers:
                s.drain()
            # Whoever passes next is the "leader" now; stop it right after.
            deadline = time.monotonic() + interval * 5
            last = None
            while last is None and time.monotonic() < deadline:
                for s in schedulers:
                    if not s.passes.empty():
                        last = s
                        break
                time.sleep(0.001)
            survivor = schedulers[1] if last is schedulers[0] else schedulers[0]
            survivor.drain()
            stopped_at = time.monotonic()
            last.stop()
            samples.append((survivor.next_pass(interval * 5 + 10) - stopped_at) * 1000)
            schedulers[schedulers.index(last)] = _Rqscheduler(url, interval)
    finally:
        for s in schedulers:
            s.stop()
    return samples


def rq_scheduler_expiry_lag(url: str, rounds: int, interval: float = 1.0) -> list:
    """A lock left by a scheduler that crashed mid-pass expires → the survivor's next pass (ms).
    Each round waits out the lock's interval+10 s, so keep rounds small."""
    admin = redis.Redis.from_url(url)
    survivor = _Rqscheduler(url, interval)
    samples = []
    try:
        survivor.next_pass(interval * 5 + 10)
        for _ in range(rounds):
            time.sleep(interval / 3)  # between passes: the lock is free
            if not admin.set(RQ_LOCK_KEY, time.time(), ex=int(interval) + 10, nx=True):
                continue
            pttl = admin.pttl(RQ_LOCK_KEY)
            expires_at = time.monotonic() + pttl / 1000
            survivor.drain()
            while True:
                passed = survivor.next_pass(int(interval) + 10 + interval * 5)
                if passed >= expires_at:
                    break
            samples.append((passed - expires_at) * 1000)
    finally:
        survivor.stop()
        admin.close()
    return samples
