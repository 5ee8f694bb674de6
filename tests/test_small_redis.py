"""Baton on the smallest Redis there is: Heroku's Mini plan (25 MB,
``noeviction``: writes fail when it is full), a backlog nobody consumes,
entries that come and go — against a real redis-server configured that way.
"""

from __future__ import annotations

import json
import time
from zoneinfo import ZoneInfo

from rq import Queue

from election import Keys, read_lease
from tests.conftest import wait_until
from tests.support.jobs import recorded_runs
from tests.support.lease import leads_ready
from tests.support.redis_server import MINI_PLAN, RedisServer, fill_until_full
from workers.entries import Entry, rq_queue_name
from workers.orphans import EXPIRE_SLACK_S, STUCK_AFTER_S, OrphanSweep
from workers.runs import PRUNE_AFTER_S, last_failures, last_runs, record_run, recent_runs, run_counts
from workers.scheduler import TickScheduler

BACKLOG_ENTRY = Entry("backlog", "tests.support.jobs:record_tick", every=1, missed="catch_up", grace=86400)


def test_a_full_redis_keeps_the_leader_says_so_and_the_schedule_resumes_once_freed(web, prefix):
    with RedisServer(extra_args=MINI_PLAN) as server:
        r = server.client()
        a = web("a", server.url, prefix, schedule="tests.support.schedule_1s")
        wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a leads")
        wait_until(lambda: len(recorded_runs(r, prefix)) >= 2, timeout=15, what="ticks run")
        token = read_lease(r, prefix).token

        filled = fill_until_full(r, prefix)
        assert filled > 10
        time.sleep(3)  # 15 renewals at the test timings (renew every 0.2 s, ttl 1 s)
        record = read_lease(r, prefix)
        assert record is not None and (record.site, record.token) == ("a", token)  # renewal needs no memory
        assert not a.has("demoted") and not a.has("lease_corrupt") and not a.has("ledger_unreadable")
        wait_until(lambda: a.has("event=redis_oom"), timeout=10, what="the redis_oom line")
        oom_line = next(line for line in a.lines if "event=redis_oom" in line)
        assert "fix=" in oom_line and "maxmemory" in oom_line
        health = wait_until(lambda: (lambda h: h if h["redis"] == "full" else None)(
            json.loads(a.get("/healthz", auth=None)[1])), timeout=15, what="/healthz says Redis is full")
        assert health["problem"] == "redis_oom" and health["role"] == "leader" and "maxmemory" in health["fix"]
        status = json.loads(a.get("/status")[1])
        assert status["redis"]["full"] is True and status["redis"]["maxmemory"] == 25 * 1024 * 1024
        runs_when_full = len(recorded_runs(r, prefix))

        for i in range(filled + 1):
            r.delete(f"someone-else:{prefix}:{i}")
        wait_until(lambda: len(recorded_runs(r, prefix)) >= runs_when_full + 2, timeout=15,
                   what="the schedule resumes by itself")
        wait_until(lambda: json.loads(a.get("/healthz", auth=None)[1])["redis"] == "reachable", timeout=10)
        assert a.has("redis_recovered")
        assert read_lease(r, prefix).token == token  # one term throughout


def test_a_follower_cannot_start_a_term_in_a_full_redis_and_says_why_not_corrupt(make_elector, prefix):
    with RedisServer(extra_args=MINI_PLAN) as server:
        r = server.client()
        filled = fill_until_full(r, prefix)
        b = make_elector(server.url, prefix, "b")
        time.sleep(1.5)
        assert not b.is_leader and b.redis_full and r.get(f"{prefix}:fence") is None
        for i in range(filled + 1):
            r.delete(f"someone-else:{prefix}:{i}")
        wait_until(lambda: b.is_leader, timeout=10, what="b leads once memory is freed")
        assert not b.redis_full


def make_scheduler(raw, prefix, entries):
    scheduler = TickScheduler(raw, prefix, ZoneInfo("UTC"), entries, is_leader=lambda: True, site="a")
    scheduler.on_elected(1)
    return scheduler


def commands_during(client, action) -> dict:
    """{command: calls} the server ran while ``action()`` ran (nobody else uses these keys)."""
    def stats():
        return {name[len("cmdstat_"):]: value["calls"] for name, value in client.info("commandstats").items()}
    before = stats()
    action()
    after = stats()
    return {name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)}


def test_a_20k_backlog_is_swept_with_a_few_commands_and_nothing_is_lost(raw, prefix):
    scheduler = make_scheduler(raw, prefix, [BACKLOG_ENTRY])
    base = float(int(time.time())) - 20_000
    for start in range(0, 20_000, 2_000):
        scheduler.enqueue([(BACKLOG_ENTRY, base + i) for i in range(start, start + 2_000)])
    q = Queue(rq_queue_name(prefix, "baton"), connection=raw)
    assert q.count == 20_000 and raw.hlen(Keys(prefix).ledger) == 20_000

    clock = [1000.0]
    sweep = OrphanSweep(raw, prefix, site="a", clock=lambda: clock[0])
    outcome = {}
    ran = commands_during(raw, lambda: outcome.update(sweep.sweep()))
    assert set(outcome.values()) == {"waiting"} and len(outcome) == 20_000
    # One HGETALL, one LRANGE: no per-entry LPOS (that was O(N^2) server time).
    assert sum(ran.values()) <= 4 and "lpos" not in ran, ran

    taken = [Queue.dequeue_any([q], timeout=1, connection=raw)[0].id for _ in range(3)]  # then the worker died
    sweep.sweep()
    clock[0] += STUCK_AFTER_S
    ran = commands_during(raw, lambda: outcome.update(sweep.sweep()))
    assert {job_id: outcome[job_id] for job_id in taken} == {job_id: "requeued" for job_id in taken}
    assert sum(ran.values()) <= 4 + 3 * 12, ran  # plus one SETTLE (and its few commands) per missing job
    assert q.count == 20_000 and raw.hlen(Keys(prefix).ledger) == 20_000


def test_ticks_nobody_started_by_their_deadline_are_cleared_and_recorded(raw, prefix):
    entry = Entry("nobody-home", "tests.support.jobs:record_tick", every=1, missed="catch_up", grace=1)
    scheduler = make_scheduler(raw, prefix, [entry])
    stale = float(int(time.time())) - EXPIRE_SLACK_S - 60
    ids = scheduler.enqueue([(entry, stale + i) for i in range(5)])
    fresh = scheduler.enqueue([(entry, time.time())])
    q = Queue(rq_queue_name(prefix, "baton"), connection=raw)
    assert q.count == 6

    outcome = OrphanSweep(raw, prefix, site="a").sweep()
    assert {job_id: outcome[job_id] for job_id in ids} == {job_id: "expired" for job_id in ids}
    assert outcome[fresh[0]] == "waiting"
    assert q.job_ids == fresh and [k for k in raw.hkeys(Keys(prefix).ledger)] == [fresh[0].encode()]
    assert not any(raw.exists(f"rq:job:{job_id}") for job_id in ids)
    assert last_runs(raw, prefix)["nobody-home"]["outcome"] == "expired"
    assert last_runs(raw, prefix)["nobody-home"]["reason"] == "not_started"
    assert run_counts(raw, prefix)[("nobody-home", "expired")] == 5


def test_a_queued_tick_carries_an_expiry_so_it_goes_even_if_no_leader_ever_sweeps(raw, prefix):
    entry = Entry("short", "tests.support.jobs:record_tick", every=10)  # grace: one period
    scheduler = make_scheduler(raw, prefix, [entry])
    [job_id] = scheduler.enqueue([(entry, float(int(time.time())))])
    ttl = raw.ttl(f"rq:job:{job_id}")
    assert 0 < ttl <= 10 + 300 + 1  # the deadline plus the claims' slack


def test_entries_removed_from_the_schedule_leave_no_residue(raw, prefix):
    keep = Entry("keep", "tests.support.jobs:record_tick", every=60)
    drop = Entry("drop", "tests.support.jobs:record_tick", every=60)
    first = make_scheduler(raw, prefix, [keep, drop]).start()
    wait_until(lambda: raw.zcard(Keys(prefix).scheduled_jobs) == 2, timeout=5)
    first.stop()
    long_ago = time.time() - PRUNE_AFTER_S - 1
    for name in ("keep", "drop"):
        record_run(raw, prefix, name, outcome="succeeded", tick=1.0, recorded_at=long_ago)
        record_run(raw, prefix, name, outcome="failed", tick=2.0, error="ValueError: boom", recorded_at=long_ago)
    record_run(raw, prefix, "just-removed", outcome="succeeded", tick=3.0)  # by the last deploy, say
    assert set(last_failures(raw, prefix)) == {"keep", "drop"}

    second = make_scheduler(raw, prefix, [keep]).start()  # the next leader runs the new schedule
    try:
        wait_until(lambda: raw.zcard(Keys(prefix).scheduled_jobs) == 1
                   and set(last_runs(raw, prefix)) == {"keep", "just-removed"},
                   timeout=5, what="the removed entry's records pruned, a recent one kept a while")
    finally:
        second.stop()
    assert set(last_failures(raw, prefix)) == {"keep"}
    assert {entry for entry, _outcome in run_counts(raw, prefix)} == {"keep", "just-removed"}
    assert not raw.exists(f"rq:job:{prefix}-entry-drop")
    assert last_failures(raw, prefix)["keep"]["error"] == "ValueError: boom"  # failures keep their error
    assert [(run["entry"], run["outcome"]) for run in recent_runs(raw, prefix, 2)] == [
        ("just-removed", "succeeded"), ("drop", "failed")]  # the run log is history: not pruned, only capped


def test_short_ticks_leave_nothing_behind_that_does_not_expire(web, shared_redis, prefix):
    """A 1 s entry for a while: RQ's per-job residue goes at once, and every
    key a tick leaves (its run claim) expires soon after the tick's grace —
    so the set of keys without an expiry does not grow with the ticks."""
    r = shared_redis.client()
    web("a", shared_redis.url, prefix, schedule="tests.support.schedule_1s")
    wait_until(lambda: len(recorded_runs(r, prefix)) >= 3, timeout=20, what="ticks run")

    def running(key):  # a tick's job while it runs (RQ persists it, then deletes it at the end)
        return key.startswith("rq:job:") and r.hget(key, "status") == "started"

    def footprint():
        keys = [k for k in r.scan_iter(match=f"*{prefix}*", count=1000) if not k.endswith(":test:executions")]
        persistent = {k for k in keys if r.ttl(k) == -1 and not running(k)}
        expiring = {k: r.ttl(k) for k in keys if r.ttl(k) > 0}
        return persistent, expiring

    persistent_before, _ = footprint()
    runs_before = len(recorded_runs(r, prefix))
    wait_until(lambda: len(recorded_runs(r, prefix)) >= runs_before + 5, timeout=20, what="five more ticks")
    persistent_after, expiring = footprint()
    assert persistent_after <= persistent_before | {f"rq:wip:{rq_queue_name(prefix, 'baton')}"}, \
        persistent_after - persistent_before
    assert not any(k.startswith("rq:job:") and "-every-second-" in k and k in persistent_after for k in expiring)
    assert not [k for k in r.scan_iter(match=f"rq:results:{prefix}*")]  # no results streams
    claims = [k for k in expiring if k.startswith(f"{prefix}:ran:")]
    assert len(claims) >= 5 and max(expiring[k] for k in claims) <= 30 + 300  # grace 30 s + the slack


def test_a_failed_run_keeps_its_error_text_and_rq_lets_the_job_go_soon(web, shared_redis, prefix):
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix, schedule="tests.support.schedule_failing")
    wait_until(a.bound, timeout=10, what="the port to be bound")
    status = wait_until(lambda: (lambda s: s if s["last_failures"].get("failing") else None)(
        json.loads(a.get("/status")[1])), timeout=20, what="a failure in /status")
    failure = status["last_failures"]["failing"]
    assert failure["outcome"] == "failed" and failure["error"].startswith("RuntimeError: this job always fails")
    assert "Traceback" in failure["error"] and "always_fails" in failure["error"]  # the traceback's tail
    newest = status["recent_runs"][0]
    assert newest["entry"] == "failing" and newest["error"] == "RuntimeError: this job always fails"
    line = wait_until(lambda: next((x for x in a.lines if "event=job_end" in x and "outcome=failed" in x), None),
                      timeout=10)
    assert line.startswith("at=warn") and 'error="RuntimeError: this job always fails"' in line
    failed_job = f"rq:job:{failure['job_id']}"
    # RQ's copy goes within a minute (RQ sets the TTL as it files the job, just after Baton's record).
    wait_until(lambda: 0 < r.ttl(failed_job) <= 60, timeout=10, what="the failed job's TTL")
