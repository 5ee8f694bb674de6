"""Tick lateness (scheduled time → the job function starts) and Redis commands
per tick, with a real scheduler process and a real forking RQ worker process
on one site, default lease timings, a 1 s interval entry."""

from __future__ import annotations

import json
import time

import redis

from bench.monitor import CommandMonitor
from tests.support.sites import Site


def tick_lateness(url: str, ticks: int, prefix: str = "bench-ticks") -> dict:
    """Returns {"lateness_ms": [...], "commands_per_tick": float, "ticks": n}.

    Lateness comes from the job itself (tests/support/jobs.py records the
    wall time its function started; the tick is its scheduled time). Commands
    are every command the site's scheduler and worker connections send while
    the ticks run (MONITOR, attributed by connection name; Lua's inner
    commands not counted; a MULTI block counts each command in it), divided
    by the ticks run. The elector's own renewals are excluded — they are in
    the idle-cost figures. ``baton_commands_per_tick`` keeps only the
    commands on Baton's keys (lease reads, slots, ledger, run claim, last
    run, the leader's orphan sweep); the rest is RQ's enqueue, execution
    bookkeeping and heartbeats.
    """
    admin = redis.Redis.from_url(url, decode_responses=True)
    site = Site("bench", url, prefix, "tests.support.schedule_1s",
                extra_env={"BATON_LEASE_TTL": "10", "BATON_RENEW_INTERVAL": "2", "BATON_RENEW_DEADLINE": "7"})
    executions_key = f"{prefix}:test:executions"
    counts = {"commands": 0, "baton": 0}
    by_command = {}
    addresses: dict = {}  # "ip:port" -> connection name

    def learn_addresses():
        for c in admin.client_list():
            name = c.get("name", "")
            if name.startswith("baton:bench:") and not name.endswith(":elector"):
                addresses[c["addr"]] = name

    def count(address, text):
        if address not in addresses:
            learn_addresses()  # a work horse's fresh connection
        if address not in addresses:
            return
        counts["commands"] += 1
        # Baton's own commands touch its keys; RQ's touch rq:* only.
        if f"{prefix}:" in text and f"{prefix}:test:" not in text:
            counts["baton"] += 1
        label = f"{addresses[address].split(':')[-1]} {text.split(' ')[0].upper()}"
        by_command[label] = by_command.get(label, 0) + 1

    try:
        deadline = time.monotonic() + 30
        while admin.llen(executions_key) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the bench site never ran a tick")
            time.sleep(0.1)
        learn_addresses()
        first = admin.llen(executions_key)
        monitor = CommandMonitor(url, count).start()
        deadline = time.monotonic() + ticks * 1.5 + 30
        while admin.llen(executions_key) < first + ticks:
            if time.monotonic() > deadline:
                raise RuntimeError("ticks stopped running")
            time.sleep(0.2)
        monitor.stop()
        done = admin.llen(executions_key) - first
        runs = [json.loads(x) for x in admin.lrange(executions_key, first, first + ticks - 1)]
    finally:
        site.stop()
        admin.close()
    return {
        "lateness_ms": [(run["started"] - run["tick"]) * 1000 for run in runs],
        "commands_per_tick": counts["commands"] / max(done, 1),
        "baton_commands_per_tick": counts["baton"] / max(done, 1),
        "ticks": len(runs),
        "commands_per_tick_by_kind": {k: v / max(done, 1) for k, v in sorted(by_command.items(), key=lambda kv: -kv[1])},
    }
