"""What Baton costs a small Redis, and how it behaves when that Redis is full.

Every measurement gets a redis-server of its own, so ``used_memory`` counts
nothing but the run (INFO memory). Two figures each: ``above_empty`` (the
same server, empty, before the site started: everything, including ~1 MB
that any site costs however little it stores — each client connection
holds ~40 KB of buffers in the server, the scripts, the allocator's pages)
and ``growth`` (from the site leading with nothing run yet to the steady
state: what the schedule's ticks leave behind). Sites are real processes
(tests/support/sites.py: ``python -m workers scheduler`` and ``worker``, or
gunicorn web dynos) at the production timings.

- ``simulated_day``: a day of the default schedule (workers/schedule.py: a
  30 s entry and a 10-minute cron, 2,880 + 144 ticks) pushed through the real
  path — the scheduler's own enqueue (workers/batch.py) and a real forking
  worker — as fast as the worker runs them. Capped structures (the run log,
  the history) reach their caps; what expires with time (run claims: the
  tick's grace plus 5 minutes) has no time to, so the figure is an upper
  bound: a real day holds ~13 claims at once, this run holds all 3,024;
  ``growth_real_day_claims_bytes`` swaps the claims measured for the 13 a
  real day holds, at the size measured (an estimate, labelled so).
- ``one_second_entry``: a 1 s entry in real time, long enough for every
  kept structure to reach its steady state (claims live 301 s, the run log
  fills in ~500 s, RQ cleans its failed registry every 10 minutes): its level
  above empty, and its growth over the last minutes
  (bytes per hour; ~0 means it levelled off). Three runs side by side: the
  job succeeds; the job always fails; no worker consumes at all.
- ``full_redis``: a Mini plan (25 MB, noeviction) filled by someone else's
  keys under a leading site: does it keep its lease, is a ``redis_oom`` line
  written, and how long after memory is freed does the schedule run again.
- ``first_tick_after_handoff``: two web dynos, the leader stopped (a dyno
  stop) half a second before a tick; how late the new leader starts it.
"""

from __future__ import annotations

import math
import time
from zoneinfo import ZoneInfo

import redis

from tests.support.jobs import recorded_runs
from tests.support.lease import leader_site
from tests.support.redis_server import MINI_PLAN, RedisServer, fill_until_full
from tests.support.sites import Site
from tests.support.waiting import wait_until
from tests.support.web import WebSite
from workers.claims import CLAIM_SLACK_S
from workers.loader import load_schedule
from workers.scheduler import TickScheduler
from workers.ticks import grace_of

PRODUCTION_TIMINGS = {"BATON_LEASE_TTL": "10", "BATON_RENEW_INTERVAL": "2", "BATON_RENEW_DEADLINE": "7"}


def _used(client) -> int:
    return int(client.info("memory")["used_memory"])


def _census(client, prefix: str) -> dict:
    """{key class: [keys, bytes]} by MEMORY USAGE, for the report."""
    classes: dict = {}
    for key in client.scan_iter(count=1000):
        if key.startswith(f"{prefix}:ran:"):
            kind = "run claims"
        elif key.startswith("rq:job:"):
            kind = "rq jobs"
        elif key.startswith("rq:results:"):
            kind = "rq results"
        elif key.startswith(f"{prefix}:"):
            kind = key[len(prefix) + 1:].split(":")[0]
        else:
            kind = key.split(":")[0] + ":" + (key.split(":")[1] if ":" in key else "")
        entry = classes.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += int(client.memory_usage(key) or 0)
    return dict(sorted(classes.items(), key=lambda kv: -kv[1][1]))


def simulated_day(prefix: str = "bench-day", batch: int = 40) -> dict:
    entries = {e.name: e for e in load_schedule("workers.schedule")}
    # As a day interleaves them: one log-time per 20 heartbeats.
    day = []
    for i in range(2880):
        day.append(entries["heartbeat"])
        if i % 20 == 0:
            day.append(entries["log-time"])
    with RedisServer() as server:
        admin = server.client()
        baseline = _used(admin)
        site = Site("bench", server.url, prefix, "workers.schedule", extra_env=PRODUCTION_TIMINGS)
        raw = server.client(decode_responses=False)
        try:
            wait_until(lambda: leader_site(admin, prefix) == "bench", 20, 0.05, "the site to lead")
            raw.ping()  # the bench's own connection, in the baseline like the admin's
            time.sleep(2)
            site_baseline = _used(admin)
            injector = TickScheduler(raw, prefix, ZoneInfo("UTC"), list(entries.values()), is_leader=lambda: True,
                                     site="bench")
            started = time.monotonic()
            queue_key = f"rq:queue:{prefix}-baton"
            for start in range(0, len(day), batch):
                now = time.time()
                injector.enqueue([(entry, now + k * 0.001) for k, entry in enumerate(day[start:start + batch])])
                wait_until(lambda: admin.llen(queue_key) == 0, 60, 0.05, "the worker to drain the batch")
            wait_until(lambda: not admin.hlen(f"{prefix}:ticks:unstarted"), 30, 0.05, "the last runs")
            time.sleep(2)
            used = _used(admin)
            census = _census(admin, prefix)
            runs = sum(int(v) for v in admin.hvals(f"{prefix}:run-counts"))
        finally:
            site.close()
            raw.close()
    claims, claims_bytes = census.get("run claims", [0, 0])
    real_day_claims = sum(math.ceil((grace_of(entry, 0.0, ZoneInfo("UTC")) + CLAIM_SLACK_S) / period)
                          for entry, period in ((entries["heartbeat"], 30), (entries["log-time"], 600)))
    growth = used - site_baseline
    return {"ticks": len(day), "runs_recorded": runs, "seconds": round(time.monotonic() - started, 1),
            "baseline_bytes": baseline, "above_empty_bytes": used - baseline, "growth_bytes": growth,
            "claims_held": claims, "real_day_claims": real_day_claims,
            "growth_real_day_claims_bytes": growth - claims_bytes + (claims_bytes // max(claims, 1)) * real_day_claims,
            "census": census}


def _growth_per_hour(samples) -> float:
    """Least-squares slope of (t, bytes) in bytes per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_b = sum(b for _, b in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return 3600 * sum((t - mean_t) * (b - mean_b) for t, b in samples) / var if var else 0.0


def one_second_entry(minutes: float = 10.0, sample_s: float = 10.0) -> dict:
    """Three servers, three sites, side by side (see the module docstring)."""
    cases = {
        "succeeds": ("bench.schedule_1s", True),
        "always_fails": ("bench.schedule_1s_failing", True),
        "no_worker": ("bench.schedule_1s", False),
    }
    servers = {case: RedisServer().start() for case in cases}
    sites, admins, baselines, site_baselines, samples = {}, {}, {}, {}, {case: [] for case in cases}
    try:
        for case, (schedule, worker) in cases.items():
            admins[case] = servers[case].client()
            baselines[case] = _used(admins[case])
            sites[case] = Site("bench", servers[case].url, f"bench-{case}", schedule, worker=worker,
                               extra_env=PRODUCTION_TIMINGS)
        for case in cases:
            wait_until(lambda: leader_site(admins[case], f"bench-{case}") == "bench", 20, 0.05, "the site to lead")
        time.sleep(1)
        for case in cases:
            site_baselines[case] = _used(admins[case]) - baselines[case]
        started = time.monotonic()
        while time.monotonic() - started < minutes * 60:
            time.sleep(sample_s)
            t = time.monotonic() - started
            for case in cases:
                samples[case].append((t, _used(admins[case]) - baselines[case]))
        out = {}
        for case in cases:
            series = samples[case]
            tail = [s for s in series if s[0] >= series[-1][0] - 120]  # the last two minutes
            out[case] = {
                "minutes": minutes,
                "level_bytes": sorted(b for _, b in tail)[len(tail) // 2],
                "growth_bytes": sorted(b for _, b in tail)[len(tail) // 2] - site_baselines[case],
                "max_bytes": max(b for _, b in series),
                "growth_bytes_per_hour_last_2_min": round(_growth_per_hour(tail)),
                "runs": dict(admins[case].hgetall(f"bench-{case}:run-counts")),
                "census": _census(admins[case], f"bench-{case}"),
                "samples": [[round(t), b] for t, b in series],
            }
        return out
    finally:
        for site in sites.values():
            site.close()
        for server in servers.values():
            server.stop()


def full_redis(rounds: int = 3, hold_s: float = 10.0, prefix: str = "bench-full") -> dict:
    results = []
    for _ in range(rounds):
        with RedisServer(extra_args=MINI_PLAN) as server:
            admin = server.client()
            site = Site("bench", server.url, prefix, "tests.support.schedule_1s", extra_env=PRODUCTION_TIMINGS)
            try:
                wait_until(lambda: len(recorded_runs(admin, prefix)) >= 2, 30, 0.05, "ticks to run")
                token = admin.hget(f"{prefix}:lease", "token")
                written = fill_until_full(admin, prefix)
                time.sleep(hold_s)
                kept = admin.hget(f"{prefix}:lease", "token") == token
                lines = site.scheduler.lines
                runs_before = len(recorded_runs(admin, prefix))
                freed_at = time.monotonic()
                for i in range(written + 1):
                    admin.delete(f"someone-else:{prefix}:{i}")
                wait_until(lambda: len(recorded_runs(admin, prefix)) > runs_before, 30, 0.05, "the schedule to resume")
                resumed_s = time.monotonic() - freed_at
                results.append({
                    "lease_kept": kept,
                    "demoted": any("event=demoted" in line for line in lines),
                    "redis_oom_logged": any("event=redis_oom" in line for line in lines),
                    "reported_corrupt": any("lease_corrupt" in line or "ledger_unreadable" in line for line in lines),
                    "resumed_after_free_s": round(resumed_s, 2),
                })
            finally:
                site.close()
    return {"rounds": results, "hold_s": hold_s}


def first_tick_after_handoff(url: str, rounds: int = 30, prefix: str = "bench-first-tick") -> dict:
    """Lateness (ms) of the first tick the new leader runs after a graceful
    handoff that happened half a second before it (1 s entry, record_tick)."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    env = dict(PRODUCTION_TIMINGS)
    sites = {"a": WebSite("a", url, prefix, schedule="tests.support.schedule_1s", extra_env=env)}
    lateness, wrong_site = [], 0
    try:
        wait_until(lambda: leader_site(admin, prefix) == "a", 30, 0.05, "a to lead")
        sites["b"] = WebSite("b", url, prefix, schedule="tests.support.schedule_1s", extra_env=env)
        wait_until(lambda: sites["b"].has("worker_waiting_for_lease"), 30, 0.05, "b's worker to wait")
        for _ in range(rounds):
            leader = leader_site(admin, prefix)
            other = "b" if leader == "a" else "a"
            wait_until(lambda: recorded_runs(admin, prefix), 10, 0.05, "a tick")
            last = recorded_runs(admin, prefix)[-1]["tick"]
            time.sleep(max(0.0, last + 1.5 - time.time()))  # half a second before the next tick
            handed_at = time.time()
            sites[leader].stop()
            next_tick = int(handed_at) + 1.0
            run = wait_until(lambda: next((r for r in recorded_runs(admin, prefix) if r["tick"] == next_tick), None),
                             15, 0.05, "the first tick after the handoff")
            lateness.append((run["started"] - run["tick"]) * 1000)
            wrong_site += run["site"] != other
            sites[leader].close()
            sites[leader] = WebSite(leader, url, prefix, schedule="tests.support.schedule_1s", extra_env=env)
            wait_until(lambda: sites[leader].has("worker_waiting_for_lease"), 30, 0.05, "the restarted site to follow")
            time.sleep(0.5)
    finally:
        for site in sites.values():
            site.close()
        admin.close()
    return {"lateness_ms": lateness, "run_by_the_old_leader": wrong_site}
