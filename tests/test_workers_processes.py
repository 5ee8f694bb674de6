"""workers/ with real scheduler and worker processes, real signals, real Redis."""

import os
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest
from rq import Queue

from tests.conftest import wait_until
from tests.support.jobs import recorded_runs as executions
from tests.support.lease import leader_site, leads_ready
from tests.support.sites import ROOT, Site
from workers.runner import run_tick
from workers.runs import last_runs


def terms(r, prefix):
    """token -> (site, start ms, end ms) from the history stream."""
    out, open_token = {}, None
    for entry_id, f in r.xrange(f"{prefix}:history"):
        at = int(entry_id.split("-")[0])
        if f["event"] in ("acquired", "takeover", "reacquired"):
            if open_token is not None and out[open_token][2] is None:
                out[open_token] = (out[open_token][0], out[open_token][1], at)
            out[int(f["token"])] = (f["site"], at, None)
            open_token = int(f["token"])
        elif f["event"] in ("released", "stepped_down") and int(f["token"]) in out:
            site, start, end = out[int(f["token"])]
            out[int(f["token"])] = (site, start, end or at)
    return out


def test_every_tick_runs_exactly_once_across_handoff_and_crash(sites, shared_redis, r, prefix):
    a = sites("a", shared_redis.url, prefix, "tests.support.schedule_1s")
    b = sites("b", shared_redis.url, prefix, "tests.support.schedule_1s")
    first = wait_until(lambda: leader_site(r, prefix), timeout=10, what="a leader")
    wait_until(lambda: executions(r, prefix), timeout=10, what="a first execution")
    window_start = time.time()
    by_name = {"a": a, "b": b}

    time.sleep(10)
    # Graceful handoff: SIGTERM to the leading site's scheduler (its elector).
    assert by_name[first].scheduler.stop().clean
    second = wait_until(lambda: (s := leader_site(r, prefix)) and s != first and s, timeout=5, what="handoff")
    by_name[first].scheduler = type(by_name[first].scheduler)(["scheduler"], by_name[first].env)

    time.sleep(9)
    # Crash: SIGKILL every process of the leading site, a few ms after a tick
    # fell due: its job has likely been taken by the site's worker and not yet
    # started, the case the new leader's orphan sweep must requeue.
    time.sleep(1 - time.time() % 1 + 0.003)
    crashed_at = time.time()
    by_name[second].kill()
    third = wait_until(lambda: (s := leader_site(r, prefix)) and s != second and s, timeout=10, what="takeover")
    assert third == first
    time.sleep(10)
    window_end = time.time() - 3  # leave the last ticks time to run

    runs = executions(r, prefix)
    in_window = [e for e in runs if window_start <= e["tick"] <= window_end]
    ticks = [e["tick"] for e in in_window]
    expected = {float(t) for t in range(int(window_start) + 1, int(window_end) + 1)}
    assert len(ticks) == len(set(ticks)), "a tick ran twice"
    assert set(ticks) <= expected
    # At most once wins: a tick the crashed site had already claimed (its run
    # claim, '<site>:<token>', is in Redis) when SIGKILL reached its worker
    # is not run again. The kill is aimed a few ms after a tick falls due,
    # before any claim, but finding the dyno's processes takes time on a
    # loaded machine, and a late tick may be the one running: each of the
    # site's worker processes (2 by default) may lose the tick it was running
    # that way, and only a tick its own site claimed.
    claims = {int(key.rsplit("-", 1)[1]) / 1000: r.get(key) for key in r.scan_iter(f"{prefix}:ran:*")}
    missing = sorted(expected - set(ticks))
    assert len(missing) <= 2 and all((claims.get(t) or "").startswith(f"{second}:") for t in missing), (
        f"ticks not run: {[(t, claims.get(t)) for t in missing]} (tick, its claim); "
        f"{second} crashed at {crashed_at:.3f}")
    # Run by the site leading at the time, under that term's token.
    history = terms(r, prefix)
    for e in in_window:
        site, start_ms, end_ms = history[e["token"]]
        assert e["site"] == site
        assert e["started"] * 1000 >= start_ms
        assert end_ms is None or e["started"] * 1000 <= end_ms + 50
    # The crash window (ttl 1 s) was caught up (policy catch_up), late but run.
    crash_ticks = [e for e in in_window if crashed_at - 1 <= e["tick"] <= crashed_at + 1.5]
    assert crash_ticks and all(e["site"] == third for e in crash_ticks if e["tick"] > crashed_at)
    assert len(set(ticks)) >= 25


def test_a_tick_taken_by_a_worker_killed_before_starting_it_runs_on_the_new_leader(sites, shared_redis, r, prefix):
    raw = shared_redis.client(decode_responses=False)
    a = sites("a", shared_redis.url, prefix, "tests.support.schedule_1s", worker=False)
    wait_until(lambda: leader_site(r, prefix) == "a", timeout=10)
    # a's worker takes the next tick off the queue (RQ's own BLMOVE) and is
    # killed before it starts it: nothing more happens to the job.
    job, _ = Queue.dequeue_any([Queue(f"{prefix}-baton", connection=raw)], timeout=5, connection=raw)
    tick = job.meta["baton_tick"]
    b = sites("b", shared_redis.url, prefix, "tests.support.schedule_1s")
    a.kill()
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=10, what="takeover")
    wait_until(lambda: any(e["tick"] == tick for e in executions(r, prefix)), timeout=20, what="the taken tick to run")
    (run,) = [e for e in executions(r, prefix) if e["tick"] == tick]
    assert run["site"] == "b"
    assert b.scheduler.has("orphan_requeued") and b.scheduler.has(job.id)
    time.sleep(1.5)
    assert len([e for e in executions(r, prefix) if e["tick"] == tick]) == 1


def test_a_job_taken_by_a_followers_worker_goes_back_to_the_leader(sites, shared_redis, r, prefix):
    b = sites("b", shared_redis.url, prefix, "tests.support.schedule_removed")
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=10)
    wait_until(lambda: b.worker.has("worker_start"), timeout=10)
    time.sleep(1.5)  # b's worker is now blocked in BLMOVE, as a leader's worker
    sites("a", shared_redis.url, prefix, "tests.support.schedule_removed")
    b.scheduler.stop()  # b hands the lease over; its worker still waits in BLMOVE
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=5)
    tick = time.time()
    job_id = f"{prefix}-manual-{int(tick * 1000)}"
    Queue(f"{prefix}-baton", connection=shared_redis.client(decode_responses=False)).enqueue_call(
        run_tick, args=("manual", tick, job_id, "tests.support.jobs:record_tick", (), {}, 60.0, "finish", prefix),
        job_id=job_id,
    )
    wait_until(lambda: executions(r, prefix), timeout=10, what="the job to run")
    (run,) = executions(r, prefix)
    assert run["site"] == "a"
    assert b.worker.has("job_returned") and b.worker.has(job_id)
    assert b.worker.has("worker_waiting_for_lease")


def test_two_schedulers_at_once_still_run_each_tick_once(sites, shared_redis, r, prefix):
    from workers.loader import load_schedule
    from workers.scheduler import TickScheduler

    sites("a", shared_redis.url, prefix, "tests.support.schedule_1s")
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10)
    # A second scheduler that wrongly believes it leads, on the same schedule.
    rogue = TickScheduler(shared_redis.client(decode_responses=False), prefix, ZoneInfo("UTC"),
                          load_schedule("tests.support.schedule_1s"), is_leader=lambda: True, site="rogue")
    rogue.on_elected(10_000)
    rogue.start()
    try:
        time.sleep(8)
    finally:
        rogue.stop()
    time.sleep(1.5)
    ticks = [e["tick"] for e in executions(r, prefix)]
    assert len(ticks) >= 6
    assert len(ticks) == len(set(ticks)), "a tick ran twice"


def _templates(client, prefix):
    key = f"rq:scheduler:{prefix}:scheduled_jobs"
    out = {}
    for job_id, score in client.zrange(key, 0, -1, withscores=True):
        meta = client.hget(f"rq:job:{job_id.decode()}", "meta")
        out[job_id.decode()] = (score, meta)
    return out


def test_restarts_keep_the_schedule_and_edits_apply_at_the_next_election(sites, shared_redis, r, prefix):
    raw = shared_redis.client(decode_responses=False)
    site = sites("a", shared_redis.url, prefix, "tests.support.schedule_removed", worker=False)
    wait_until(lambda: site.scheduler.has("schedule_written"), timeout=10)
    before = _templates(raw, prefix)
    assert list(before) == [f"{prefix}-entry-other"]
    for _ in range(3):
        assert site.scheduler.stop().clean
        site.scheduler = type(site.scheduler)(["scheduler"], site.env)
        wait_until(lambda: site.scheduler.has("schedule_written"), timeout=10)
        assert site.scheduler.has("other=unchanged")
        assert _templates(raw, prefix) == before  # same entries, same next run times
    site.scheduler.stop()
    site.env["BATON_SCHEDULE"] = "tests.support.schedule_edited"
    site.scheduler = type(site.scheduler)(["scheduler"], site.env)
    wait_until(lambda: site.scheduler.has("schedule_written"), timeout=10)
    assert site.scheduler.has("every-second=added") and site.scheduler.has("other=unchanged")
    site.scheduler.stop()
    site.env["BATON_SCHEDULE"] = "tests.support.schedule_removed"
    site.scheduler = type(site.scheduler)(["scheduler"], site.env)
    wait_until(lambda: site.scheduler.has("schedule_written"), timeout=10)
    assert site.scheduler.has("every-second=removed")
    assert list(_templates(raw, prefix)) == [f"{prefix}-entry-other"]
    assert not raw.exists(f"rq:job:{prefix}-entry-every-second")


def test_cron_uses_baton_timezone_not_the_host_tz(sites, shared_redis, r, prefix):
    from datetime import datetime, timedelta

    site = sites("a", shared_redis.url, prefix, "tests.support.schedule_ny", worker=False,
                 extra_env={"TZ": "Asia/Tokyo", "BATON_TIMEZONE": "America/New_York"})
    wait_until(lambda: site.scheduler.has("schedule_written"), timeout=10)
    score = r.zscore(f"rq:scheduler:{prefix}:scheduled_jobs", f"{prefix}-entry-nine-am")
    at = datetime.fromtimestamp(score, ZoneInfo("America/New_York"))
    assert (at.hour, at.minute) == (9, 0)
    assert timedelta(0) < at - datetime.now(ZoneInfo("America/New_York")) <= timedelta(days=1)


def test_a_job_is_stopped_when_the_site_loses_the_lease_if_its_entry_says_so(sites, shared_redis, r, prefix):
    a = sites("a", shared_redis.url, prefix, "tests.support.schedule_slow_stop")
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10)
    tick = time.time()
    job_id = f"{prefix}-slow-{int(tick * 1000)}"
    Queue(f"{prefix}-baton", connection=shared_redis.client(decode_responses=False)).enqueue_call(
        run_tick, args=("slow", tick, job_id, "tests.support.jobs:record_tick", (), {"sleep": 6}, 60.0, "stop", prefix),
        job_id=job_id, timeout=60,
    )
    wait_until(lambda: a.worker.has("job_start"), timeout=10)
    a.scheduler.stop()  # the lease goes away mid-job
    wait_until(lambda: "slow" in last_runs(r, prefix), timeout=10)
    assert last_runs(r, prefix)["slow"]["outcome"] == "stopped_lease_lost"
    assert executions(r, prefix) == []  # the job never reached its end


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"BATON_SCHEDULE": "tests.support.bad.bad_cron"}, "'nightly'"),
        ({"BATON_SCHEDULE": "tests.support.bad.both"}, "'both'"),
        ({"BATON_SCHEDULE": "tests.support.bad.neither"}, "'neither'"),
        ({"BATON_SCHEDULE": "tests.support.bad.unknown_func"}, "no_such_job"),
        ({"BATON_SCHEDULE": "tests.support.bad.bad_name"}, "'log time'"),
        ({"BATON_SCHEDULE": "tests.support.bad.duplicate"}, "'dup'"),
        ({"BATON_SCHEDULE": "tests.support.no_such_module"}, "BATON_SCHEDULE"),
        ({"BATON_TIMEZONE": "Mars/Olympus"}, "BATON_TIMEZONE"),
        ({"BATON_PREFIX": "a b"}, "BATON_PREFIX"),
        ({"REDIS_URL": "http://example"}, "REDIS_URL"),
        ({"BATON_LEASE_TTL": "ten"}, "BATON_LEASE_TTL"),
        ({"BATON_RENEW_DEADLINE": "20"}, "BATON_RENEW_DEADLINE"),
        ({"BATON_SITE": "bad site"}, "BATON_SITE"),
        ({"BATON_REDIS_TLS_VERIFY": "maybe"}, "BATON_REDIS_TLS_VERIFY"),
    ],
)
@pytest.mark.parametrize("command", ["check", "worker", "scheduler"])
def test_bad_input_stops_the_process_with_one_line(shared_redis, env, needle, command):
    full = {**os.environ, "REDIS_URL": shared_redis.url, "BATON_SITE": "a", **env}
    done = subprocess.run([sys.executable, "-m", "workers", command], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


def test_nothing_runs_while_the_lease_cannot_be_read(sites, shared_redis, r, prefix):
    """Fail closed: junk at the lease key means no site can prove it leads."""
    r.set(f"{prefix}:lease", "typed by hand")
    a = sites("a", shared_redis.url, prefix, "tests.support.schedule_removed", scheduler=False)
    wait_until(lambda: a.worker.has("lease_unreadable"), timeout=10)
    tick = time.time()
    job_id = f"{prefix}-manual-{int(tick * 1000)}"
    Queue(f"{prefix}-baton", connection=shared_redis.client(decode_responses=False)).enqueue_call(
        run_tick, args=("manual", tick, job_id, "tests.support.jobs:record_tick", (), {}, 60.0, "finish", prefix),
        job_id=job_id,
    )
    time.sleep(3)
    assert executions(r, prefix) == []
    assert r.lrange(f"rq:queue:{prefix}-baton", 0, -1) == [job_id]  # still queued, not lost


def test_the_shipped_schedule_loads_and_its_heartbeat_writes_fenced(shared_redis, r, prefix):
    from workers.loader import load_schedule

    names = [e.name for e in load_schedule("workers.schedule")]
    assert names == ["log-time", "heartbeat"]
    a = Site("a", shared_redis.url, prefix, "workers.schedule",
             extra_env={"BATON_LEASE_TTL": "1", "BATON_RENEW_INTERVAL": "0.2", "BATON_RENEW_DEADLINE": "0.7"})
    try:
        wait_until(lambda: a.scheduler.has("schedule_written"), timeout=10)
        assert a.scheduler.has("log-time=added") and a.scheduler.has("heartbeat=added")
    finally:
        a.stop()
