"""Leadership follows the ability to work (issue 15), with real gunicorn
sites, real RQ workers and real signals: a site competes only while one of
its workers marks it ready (workers/worker.py, election/readiness.py).

A worker is "kept from restarting" by freezing it (SIGSTOP): wedged, not
dead, so its supervisor has nothing to restart, and its readiness mark runs
out as a killed one's would."""

from __future__ import annotations

import json
import os
import signal
import time

from election import ready_sites
from tests.support.jobs import enqueue_tick, recorded_runs, runs_in_file
from tests.support.lease import leader_site, leads_ready
from tests.support.sites import FAST_ENV, Proc
from tests.support.waiting import wait_until
from workers.pool import children
from workers.presence import READY_LIVE_S
from workers.runs import last_runs

WORKERS = ("-m", "workers", "worker")

# The documented bound (README, "Leadership follows the workers"): a leader
# hands over at its first renewal after its last worker's mark ran out.
HANDOVER_BOUND_S = READY_LIVE_S + float(FAST_ENV["BATON_RENEW_INTERVAL"])

# Slack for two gunicorn sites and their workers on a two-core machine.
SLACK_S = 3.0


def _ready(r, prefix, site) -> bool:
    return site in ready_sites(r, prefix)


def _health(site) -> dict:
    status, body = site.get("/healthz", auth=None)
    assert status == 200  # degraded or not: Heroku's router must keep the site
    return json.loads(body)


def _said(dyno, event, **fields) -> list:
    wanted = [f"event={event}"] + [f"{k}={v}" for k, v in fields.items()]
    return [line for line in dyno.lines if all(part in line for part in wanted)]


def test_a_leader_whose_workers_are_wedged_hands_over_and_no_tick_is_lost(web, shared_redis, r, prefix, tmp_path):
    run_file = tmp_path / "runs.jsonl"
    env = {"BATON_TEST_RUN_FILE": str(run_file)}
    a = web("a", shared_redis.url, prefix, "tests.support.schedule_1s_file", extra_env=env)
    wait_until(lambda: leader_site(r, prefix) == "a" and _ready(r, prefix, "a"), timeout=30, what="a to lead, ready")
    b = web("b", shared_redis.url, prefix, "tests.support.schedule_1s_file", extra_env=env)
    wait_until(lambda: _ready(r, prefix, "b"), timeout=30, what="b's worker to mark it ready")
    wait_until(lambda: any(run["site"] == "a" for run in runs_in_file(run_file)), timeout=30, what="a to run ticks")
    time.sleep(1.5)
    assert leader_site(r, prefix) == "a"  # both ready: the lease stays where it is

    frozen = a.freeze(*WORKERS)
    assert frozen, "a's workers"
    try:
        frozen_at = time.monotonic()
        wait_until(lambda: leader_site(r, prefix) == "b", timeout=HANDOVER_BOUND_S + 20, what="b to take over")
        moved_after = time.monotonic() - frozen_at
        assert moved_after <= HANDOVER_BOUND_S + SLACK_S, moved_after
        assert _said(a, "site_not_ready", action='"handing over"')
        assert _said(a, "demoted", reason="not_ready")
        # b's line follows its term in Redis by the time its output is read.
        wait_until(lambda: _said(b, "elected", site="b"), timeout=5, what="b's elected line")
        moved_wall = time.time()
        wait_until(lambda: any(run["site"] == "b" and run["started"] > moved_wall for run in runs_in_file(run_file)),
                   timeout=15, what="b to run the schedule")
        health = _health(a)
        assert health["role"] == "follower" and health["ready"] is False
        time.sleep(2)
        assert leader_site(r, prefix) == "b"  # a cannot work: it does not come back
    finally:
        a.thaw(frozen)
    wait_until(lambda: _ready(r, prefix, "a"), timeout=15, what="a's workers to mark it ready again")
    wait_until(lambda: _said(a, "site_ready"), timeout=15, what="a to see itself ready")
    time.sleep(1.5)
    assert leader_site(r, prefix) == "b"  # ready again is no reason to take the lease back
    # No tick lost, none run twice: every tick from the first to the last
    # finished one ran once (a tick a's frozen worker had taken went back to
    # its queue when it woke, and ran under b).
    time.sleep(3)
    ticks = sorted(run["tick"] for run in runs_in_file(run_file))
    assert len(ticks) == len(set(ticks)), "a tick ran twice"
    last = ticks[-1] - 3  # the newest ticks may still be queued or running
    expected = [t for t in range(int(ticks[0]), int(last) + 1)]
    assert [t for t in ticks if t <= last] == expected


def test_a_lone_site_without_a_worker_keeps_leading_and_says_so(web, shared_redis, r, prefix):
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leader_site(r, prefix) == "a" and _ready(r, prefix, "a"), timeout=30, what="a to lead, ready")
    wait_until(lambda: _health(a)["status"] == "ok", timeout=10, what="a healthy")
    frozen = a.freeze(*WORKERS)
    try:
        wait_until(lambda: _health(a)["status"] == "degraded", timeout=READY_LIVE_S + 15, what="a degraded")
        health = _health(a)
        assert health["role"] == "leader" and health["ready"] is False
        assert any(reason.startswith("leading_without_worker") for reason in health["reasons"])
        assert 'baton_site_ready{site="a"} 0.0' in a.get("/metrics")[1]
        assert _said(a, "site_not_ready", leader="True", ready_elsewhere="False")
        time.sleep(2)
        assert leader_site(r, prefix) == "a"  # something beats nothing
    finally:
        a.thaw(frozen)
    wait_until(lambda: _health(a)["status"] == "ok", timeout=15, what="a healthy again")
    assert _health(a)["ready"] is True and leader_site(r, prefix) == "a"
    assert 'baton_site_ready{site="a"} 1.0' in a.get("/metrics")[1]


def test_a_separate_worker_process_makes_its_site_eligible_only_while_it_runs(web, shared_redis, r, prefix,
                                                                             tmp_path):
    run_file = tmp_path / "runs.jsonl"
    env = {"BATON_TEST_RUN_FILE": str(run_file)}
    a = web("a", shared_redis.url, prefix, "tests.support.schedule_1s_file",
            extra_env={**env, "BATON_EMBEDDED_WORKER": "false"})
    wait_until(lambda: leader_site(r, prefix) == "a", timeout=30, what="a to lead (nobody can work)")
    assert not _ready(r, prefix, "a")
    wait_until(lambda: _health(a)["status"] == "degraded", timeout=10, what="a to say it leads without a worker")
    b = web("b", shared_redis.url, prefix, "tests.support.schedule_1s_file", extra_env=env)
    # b's worker makes b ready: a, which cannot work, hands the lease to b.
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=30, what="a to hand over to b")
    worker = Proc(["worker"], {**a.env, "BATON_EMBEDDED_WORKER": "false"})
    try:
        wait_until(lambda: _ready(r, prefix, "a"), timeout=30, what="a's worker process to make a ready")
        report = b.stop()
        assert report.clean, report
        wait_until(lambda: leader_site(r, prefix) == "a", timeout=15, what="a to take over from b")
        since = time.time()
        wait_until(lambda: any(run["site"] == "a" and run["started"] > since for run in runs_in_file(run_file)),
                   timeout=15, what="a's worker process to run ticks")
        assert _health(a)["status"] == "ok"
        worker.crash()
        wait_until(lambda: not _ready(r, prefix, "a"), timeout=READY_LIVE_S + 10, what="a's mark to run out")
        wait_until(lambda: _health(a)["status"] == "degraded", timeout=10, what="a to say it has no worker")
        assert leader_site(r, prefix) == "a"  # alone: it keeps leading
    finally:
        worker.close()


def test_redis_blips_while_a_job_runs_keep_the_worker_up_and_lose_no_tick(web, redis_server, prefix):
    r = redis_server.client()
    # Production timings: a 2 s freeze of Redis is within a leader's renew deadline.
    timings = {"BATON_LEASE_TTL": "10", "BATON_RENEW_INTERVAL": "2", "BATON_RENEW_DEADLINE": "7"}
    a = web("a", redis_server.url, prefix, "tests.support.schedule_slow_ticks", extra_env=timings)
    wait_until(lambda: len(recorded_runs(r, prefix)) >= 1, timeout=40, what="a first slow tick")
    first = recorded_runs(r, prefix)[0]
    # The next run starts 5 s after this one did, and sleeps 4 s: hit it 1 s in.
    time.sleep(max(0.0, first["started"] + 5 + 1 - time.time()))
    killed = r.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 3  # the elector's, the worker's, its horse's at least
    time.sleep(0.5)
    redis_server.freeze()
    time.sleep(2)
    redis_server.thaw()
    r = redis_server.client()
    wait_until(lambda: len(recorded_runs(r, prefix)) >= 4, timeout=60, what="three more slow ticks")
    runs = recorded_runs(r, prefix)
    ticks = [run["tick"] for run in runs]
    assert ticks == list(range(int(ticks[0]), int(ticks[0]) + 5 * len(ticks), 5)), ticks  # none lost, in order
    assert len({run["worker_pid"] for run in runs}) <= 2  # the same workers: none restarted
    for bad in ("worker_died", "worker_restarting", "unhandled exception", "terminated unexpectedly"):
        assert not any(bad in line for line in a.lines), bad
    assert a.proc.poll() is None


def test_a_tick_whose_work_horse_cannot_connect_goes_back_and_runs_once(web, redis_server, prefix):
    """A full connection plan (Heroku Mini: 20): Redis refuses the work
    horse's first connection, so the horse dies before its job begins and RQ
    files the job as failed. The worker puts the tick back (its run claim
    was never taken), and it runs once Redis takes connections again."""
    r = redis_server.client()
    raw = redis_server.client(decode_responses=False)
    raw.ping()  # connected before the limit
    a = web("a", redis_server.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a") and a.count("event=worker_start") == 2, timeout=30,
               what="a leading with both workers")
    time.sleep(1.5)  # every process has the connections it keeps
    r.config_set("maxclients", len(r.client_list()))
    try:
        enqueue_tick(raw, prefix, "refused")
        wait_until(lambda: _said(a, "tick_requeued", reason='"its work horse died'), timeout=20,
                   what="the tick put back")
    finally:
        r.config_set("maxclients", 10000)
    wait_until(lambda: recorded_runs(r, prefix), timeout=20, what="the tick to run")
    time.sleep(1)
    (run,) = recorded_runs(r, prefix)
    assert run["entry"] == "refused" and run["site"] == "a"
    assert not _said(a, "rerun_given_up")


def test_a_work_horse_killed_mid_job_is_recorded_killed_and_not_run_again(web, shared_redis, r, prefix):
    """The kernel's OOM killer takes the work horse (SIGKILL to it alone):
    the job had begun, so at most once holds — recorded, not rerun."""
    raw = shared_redis.client(decode_responses=False)
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=30, what="a leading, ready")
    enqueue_tick(raw, prefix, "long", kwargs={"sleep": 30})
    wait_until(lambda: _said(a, "job_start", entry="long"), timeout=20, what="the job to start")
    horses = wait_until(lambda: [child for pid in a.pids_running(*WORKERS) for child in children(pid)],
                        timeout=10, what="the work horse")
    os.kill(horses[0], signal.SIGKILL)
    run = wait_until(lambda: last_runs(r, prefix).get("long"), timeout=20, what="the run recorded")
    assert run["outcome"] == "killed" and "SIGKILL" in run["reason"], run
    time.sleep(2)
    assert recorded_runs(r, prefix) == [] and not _said(a, "tick_requeued")
    assert a.count("event=job_start entry=long") == 1
