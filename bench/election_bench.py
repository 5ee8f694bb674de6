"""Baton's election, measured: takeover lag after expiry and what an idle
elector costs Redis (graceful handoff is in handoff.py, beside the peer's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from bench.monitor import CommandMonitor
from tests.support.waiting import wait_until
from election import Callbacks, ElectionConfig, Elector, Identity, Lease

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Failover rounds need the lease to run out; a 1 s ttl keeps 50 rounds short.
# The takeover lag does not depend on the ttl: the follower aims at the
# expiry it computed from PTTL, whatever the ttl.
# The short hold-off lets the resumed holder retake the lease at once for the
# next round.
FAST = ElectionConfig(ttl=1.0, renew_interval=0.2, renew_deadline=0.7, step_down_hold_off=0.05)


class _Candidate:
    """An in-process elector that timestamps its own election."""

    def __init__(self, url, prefix, site, config):
        self.elected_at = None  # (perf_counter, time.time())
        self.got = threading.Event()

        def on_elected(_token):
            self.elected_at = (time.perf_counter(), time.time())
            self.got.set()

        lease = Lease.from_url(url, Identity(site=site, dyno="bench"), config.ttl_ms, prefix=prefix)
        self.elector = Elector(lease, config, Callbacks(on_elected=on_elected)).start()


def takeover_lag(url: str, rounds: int, prefix: str = "bench-takeover") -> list:
    """The lease expires in Redis → the follower's on_elected runs.

    The holder is a real elector process frozen with SIGSTOP (renewals stop,
    nothing is released). The expiry instant is the lease's own: renewed_at +
    ttl_ms from the record, on the Redis server's clock — the same machine's
    clock as time.time() here. After each round the frozen holder is resumed
    (it fences itself) and leadership is handed back to it for the next round.
    """
    config = FAST
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.elector_process", url, prefix, "frozen",
         str(config.ttl), str(config.renew_interval), str(config.renew_deadline)],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )
    admin = Lease.from_url(url, Identity(site="observer", dyno="bench"), config.ttl_ms, prefix=prefix, role="observer")
    follower = None
    samples = []
    try:
        wait_until(lambda: (r := admin.read()) is not None and r.site == "frozen", 10, 0.002, "child to lead")
        follower = _Candidate(url, prefix, "waiter", config)
        for _ in range(rounds):
            wait_until(lambda: (r := admin.read()) is not None and r.site == "frozen", 10, 0.002, "child to lead")
            wait_until(lambda: follower.elector.leader is not None and follower.elector.leader.site == "frozen",
                       10, 0.002, "follower to see the child")
            follower.got.clear()
            time.sleep(0.05)
            os.kill(holder.pid, signal.SIGSTOP)
            time.sleep(0.01)  # a renewal in flight lands before we read
            record = admin.read()
            expires_at = record.expires_at / 1000
            if not follower.got.wait(config.ttl * 5):
                raise RuntimeError("no takeover after expiry")
            samples.append((follower.elected_at[1] - expires_at) * 1000)
            os.kill(holder.pid, signal.SIGCONT)
            # Hand leadership back so the child holds it next round.
            follower.elector.step_down()
        return samples
    finally:
        if follower:
            follower.elector.stop()
        os.kill(holder.pid, signal.SIGCONT)
        holder.terminate()
        holder.wait(10)
        admin.close()


def idle_cost(url: str, seconds: float, prefix: str = "bench-idle") -> dict:
    """Redis commands per second and connections per idle elector, default timings.

    One leader and two followers run for `seconds`. MONITOR attributes every
    command a client sends to its connection, mapped to the elector by the
    connection's name (CLIENT LIST); commands a Lua script runs inside the
    server are not round trips and are not counted. CLIENT LIST, sampled every
    second, also counts connections per elector.
    """
    import redis

    admin = redis.Redis.from_url(url, decode_responses=True)
    config = ElectionConfig()
    sites = ["idle-leader", "idle-follower-0", "idle-follower-1"]
    leader = _Candidate(url, prefix, sites[0], config)
    wait_until(lambda: leader.elector.is_leader, 5, 0.002, "leader")
    followers = [_Candidate(url, prefix, site, config) for site in sites[1:]]
    wait_until(lambda: all(f.elector.leader for f in followers), 5, 0.002, "followers")
    time.sleep(0.5)

    counts = {site: 0 for site in sites}
    addresses = {}  # "ip:port" -> site
    most_connections = 0

    def refresh_addresses():
        nonlocal most_connections
        clients = admin.client_list()
        names = [c["name"] for c in clients]
        most_connections = max([most_connections] + [names.count(f"baton:{s}:elector") for s in sites])
        for c in clients:
            for s in sites:
                if c["name"] == f"baton:{s}:elector":
                    addresses[c["addr"]] = s

    refresh_addresses()

    def count(address, _text):
        site = addresses.get(address)
        if site:
            counts[site] += 1

    monitor = CommandMonitor(url, count).start()
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        time.sleep(1)
        refresh_addresses()
    monitor.stop()
    for candidate in [leader, *followers]:
        candidate.elector.stop()
    admin.close()
    return {
        "window_s": seconds,
        "leader_commands_per_s": counts[sites[0]] / seconds,
        "follower_commands_per_s": (counts[sites[1]] + counts[sites[2]]) / 2 / seconds,
        "connections_per_elector_max": most_connections,
    }


