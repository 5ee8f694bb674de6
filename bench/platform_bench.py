"""Stopping a site the way the platforms do, measured: real gunicorn dynos
(tests/support/platform.Dyno), SIGTERM to every process of the dyno twice,
SIGKILL at 30 s if anything is left."""

from __future__ import annotations

import time

import redis

from election import read_lease
from tests.support.jobs import enqueue_tick
from tests.support.lease import leader_site
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.web import WebSite
from workers.runs import last_runs

# Default election timings: what a deployment runs with.
DEFAULT_TIMINGS = {"BATON_LEASE_TTL": "10", "BATON_RENEW_INTERVAL": "2", "BATON_RENEW_DEADLINE": "7"}
EMPTY = "tests.support.schedule_empty"


def dyno_stop_with_job(url: str, rounds: int, job_s: float = 4.0, prefix: str = "bench-dyno-stop") -> dict:
    """The leading site runs a ``job_s`` job; a dyno stop hits it right after
    the job started. Per round, from the first SIGTERM (wall clock, same
    machine): the job's end as recorded in ``{prefix}:runs``; the other site
    holding the lease (its ``acquired_at``, server clock); every process of the
    stopped dyno gone. ``after_job_ms``: the job's end → the other site leads,
    what Baton adds to the job itself."""
    client = redis.Redis.from_url(url, decode_responses=True)
    raw = redis.Redis.from_url(url)
    sites = {n: WebSite(n, url, prefix, schedule=EMPTY, extra_env=DEFAULT_TIMINGS) for n in ("x", "y")}
    out = {"job_finished_ms": [], "other_leads_ms": [], "after_job_ms": [], "all_exited_ms": [], "clean": []}
    try:
        for i in range(rounds):
            holder = wait_until(lambda: leader_site(client, prefix), 30, 0.005, "a leader")
            other = "y" if holder == "x" else "x"
            wait_until(lambda: sites[other].has("leader_changed"), 30, 0.005, "the other site to follow")
            wait_until(lambda: sites[holder].has("worker_start"), 30, 0.005, "the leader's worker")
            entry = f"job{i}"
            enqueue_tick(raw, prefix, entry, kwargs={"sleep": job_s})
            wait_until(lambda: sites[holder].has(f"entry={entry} site={holder}"), 30, 0.002, "the job to start")
            sent = time.time()
            report = sites[holder].stop()
            run = last_runs(client, prefix)[entry]
            finished = run["started_at"] + run["duration_ms"] / 1000
            lease = wait_until(lambda: (r := read_lease(client, prefix)) and r.site == other and r, 10, 0.005,
                               "the handoff")
            out["job_finished_ms"].append((finished - sent) * 1000)
            out["other_leads_ms"].append(lease.acquired_at - sent * 1000)
            out["after_job_ms"].append(lease.acquired_at - finished * 1000)
            out["all_exited_ms"].append(report.seconds * 1000)
            out["clean"].append(report.clean and run["outcome"] == "succeeded")
            sites[holder].close()
            sites[holder] = WebSite(holder, url, prefix, schedule=EMPTY, extra_env=DEFAULT_TIMINGS)
    finally:
        for site in sites.values():
            site.close()
        client.close()
        raw.close()
    return out


def frozen_redis_shutdown(rounds: int, prefix: str = "bench-frozen") -> dict:
    """The worst case: Redis frozen (SIGSTOP) just before a dyno stop, with no
    job running, and with a job that swallows its interrupt under the longest
    grace allowed (20 s). First SIGTERM → no process of the dyno left (ms);
    whether the platform had to SIGKILL anything."""
    out = {}
    for case in ("no_job", "deaf_job_grace_20s"):
        samples, killed = [], 0
        for _ in range(rounds):
            with RedisServer() as server:
                client = server.client()
                site = WebSite("f", server.url, prefix, schedule=EMPTY,
                               extra_env={**DEFAULT_TIMINGS, "BATON_SHUTDOWN_GRACE": "20"})
                try:
                    wait_until(lambda: leader_site(client, prefix) == "f", 30, 0.005, "the site to lead")
                    wait_until(lambda: site.has("worker_start"), 30, 0.005, "its worker")
                    if case != "no_job":
                        enqueue_tick(server.client(decode_responses=False), prefix, "deaf",
                                     func="tests.support.jobs:stubborn", kwargs={"seconds": 60})
                        wait_until(lambda: site.has("job_start"), 30, 0.005, "the job")
                    server.freeze()
                    report = site.stop()
                    server.thaw()
                    samples.append(report.seconds * 1000)
                    killed += bool(report.killed)
                finally:
                    server.thaw()
                    site.close()
        out[case] = {"ms": samples, "sigkilled_rounds": killed}
    return out


def redis_return_resume(url_server: RedisServer, rounds: int, down_s: float = 3.0,
                        prefix: str = "bench-resume") -> list:
    """Redis killed under a leading site and started again ``down_s`` later; a
    tick job enqueued as soon as it answers. The site's elector takes the
    lease back (``acquired_at``) → the job starts on the site's worker (ms):
    how long the worker lags its elector after an outage."""
    samples = []
    site = WebSite("r", url_server.url, prefix, schedule=EMPTY)
    try:
        for i in range(rounds):
            client = url_server.client()
            wait_until(lambda: leader_site(client, prefix) == "r", 30, 0.005, "the site to lead")
            wait_until(lambda: site.has("worker_start"), 30, 0.005, "its worker")
            url_server.kill()
            time.sleep(down_s)
            url_server.start()
            client = url_server.client()
            enqueue_tick(url_server.client(decode_responses=False), prefix, f"back{i}")
            lease = wait_until(lambda: (r := read_lease(client, prefix)) and r.site == "r" and r, 30, 0.005,
                               "the elector")
            run = wait_until(lambda: last_runs(client, prefix).get(f"back{i}"), 30, 0.005, "the job")
            samples.append(run["started_at"] * 1000 - lease.acquired_at)
    finally:
        site.close()
    return samples
