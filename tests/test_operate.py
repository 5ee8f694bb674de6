"""Operating the schedule, with real scheduler and worker processes and a
real Redis: overlap policies, pause across a failover, run now from a
follower, retries, the fenced claim, and on_lost_lease='stop' for a job
blocked in a sleep or a socket read while its site is cut off from Redis."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest
from rq import Queue

from election import Keys, read_lease
from tests.conftest import wait_until
from tests.support.inline_worker import InlineWorker
from tests.support.jobs import recorded_runs
from tests.support.lease import leader_site, leads_ready
from tests.support.operate_jobs import spans
from tests.support.sites import ROOT
from tests.support.tcp_proxy import TcpProxy
from workers import controls
from workers.entries import Entry, rq_queue_name
from workers.runs import tick_history
from workers.scheduler import TickScheduler
from workers.store import definition_hash

UTC = ZoneInfo("UTC")


def by_entry(runs, name):
    return sorted((run for run in runs if run["entry"] == name), key=lambda run: run["started"])


def overlapping(runs) -> bool:
    return any(later["started"] < earlier["ended"] for earlier, later in zip(runs, runs[1:]))


def test_overlap_policies_with_runs_longer_than_their_period(sites, shared_redis, r, prefix):
    sites("a", shared_redis.url, prefix, "tests.support.schedule_overlap", {"BATON_WORKER_CONCURRENCY": "4"})
    wait_until(lambda: len(by_entry(spans(r, prefix), "skip")) >= 3 and len(by_entry(spans(r, prefix), "buffer")) >= 3,
               timeout=40, what="three runs of skip and of buffer")
    runs = spans(r, prefix)
    skip, buffer, allow = (by_entry(runs, name) for name in ("skip", "buffer", "allow"))
    # skip: never two at once; the ticks that found a run in progress are recorded as skipped.
    assert not overlapping(skip)
    skipped = [t for t in tick_history(r, prefix, "skip") if t["outcome"] == "skipped"]
    assert skipped and {t["reason"] for t in skipped} == {"overlap"}
    # buffer_one: never two at once, and a tick that waited starts as the run before it ends.
    assert not overlapping(buffer)
    waited = [later for earlier, later in zip(buffer, buffer[1:]) if later["started"] - later["tick"] > 0.5]
    assert waited, buffer
    assert all(later["started"] - earlier["ended"] < 1.0 for earlier, later in zip(buffer, buffer[1:])
               if later in waited)
    # allow: runs of one entry side by side.
    assert overlapping(allow), allow
    assert not [t for t in tick_history(r, prefix, "allow") if t["outcome"] == "skipped"]


def test_pause_holds_across_a_failover_and_resume_runs_again(sites, shared_redis, r, raw, prefix):
    from workers.loader import load_schedule

    entries = load_schedule("tests.support.schedule_operate")
    a = sites("a", shared_redis.url, prefix, "tests.support.schedule_operate")
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10, what="a to lead")
    b = sites("b", shared_redis.url, prefix, "tests.support.schedule_operate")
    wait_until(lambda: by_entry(spans(r, prefix), "beat"), timeout=10, what="beat to run")
    record = controls.pause(r, prefix, entries, "beat", by="ops@test", note="maintenance window")
    assert controls.paused(r, prefix)["beat"] == record
    wait_until(lambda: any(t.get("reason") == "paused" for t in tick_history(r, prefix, "beat")), timeout=10,
               what="a paused tick recorded")
    a.kill()  # failover: b leads once the lease expires
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=10, what="b to take over")
    paused_since = time.time()
    wait_until(lambda: [t for t in tick_history(r, prefix, "beat")
                        if t.get("reason") == "paused" and t.get("site") == "b"], timeout=10,
               what="b to record beat's ticks as paused")
    assert not [s for s in by_entry(spans(r, prefix), "beat") if s["started"] > paused_since]
    assert controls.resume(r, prefix, entries, "beat") is True
    resumed = time.time()
    wait_until(lambda: [s for s in by_entry(spans(r, prefix), "beat") if s["started"] > resumed and s["site"] == "b"],
               timeout=10, what="beat to run again on b")
    assert "beat" not in controls.paused(r, prefix)
    b.close()


def test_run_now_from_a_follower_runs_on_the_leader_and_a_failure_is_retried(sites, shared_redis, r, raw, prefix):
    from workers.loader import load_schedule

    entries = load_schedule("tests.support.schedule_operate")
    sites("a", shared_redis.url, prefix, "tests.support.schedule_operate")
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10, what="a to lead")
    sites("b", shared_redis.url, prefix, "tests.support.schedule_operate", scheduler=True, worker=True)
    # b's operator (the web route and the CLI call the same function) asks; a's worker runs it.
    job_id = controls.run_now(raw, prefix, entries, UTC, "daily", by="op@b (web)")
    assert "-daily-m" in job_id
    run = wait_until(lambda: by_entry(spans(r, prefix), "daily"), timeout=10, what="the manual run")[0]
    assert run["site"] == "a"
    ticks = wait_until(lambda: tick_history(r, prefix, "daily"), timeout=5, what="its record")
    assert ticks[0]["outcome"] == "succeeded" and ticks[0]["manual"] == "op@b (web)" and ticks[0]["site"] == "a"
    # flaky fails on its first two attempts: retried after 1 s, then 2 s (the leader looks every 5 s).
    controls.run_now(raw, prefix, entries, UTC, "flaky", by="op@b (web)")
    wait_until(lambda: [t for t in tick_history(r, prefix, "flaky") if t["outcome"] == "succeeded"], timeout=40,
               what="flaky to succeed on a retry")
    history = tick_history(r, prefix, "flaky")[::-1]
    assert [(t["outcome"], t.get("attempt", 0)) for t in history] == [("failed", 0), ("failed", 1), ("succeeded", 2)]
    assert history[0]["error"] == "ValueError: attempt 1 fails"
    attempts = [s["attempt"] for s in spans(r, prefix) if s["entry"] == "flaky"]
    assert attempts == [1, 2, 3]  # each attempt ran once


class PausingWorker(InlineWorker):
    """Reads the lease and stamps the job (InlineWorker), then stalls — as a
    worker frozen between its lease read and the claim — while ``stall``
    moves the lease to another site."""

    def __init__(self, *args, stall, **kwargs):
        super().__init__(*args, **kwargs)
        self.stall = stall

    def execute_job(self, job, queue):
        from rq import SimpleWorker

        record = read_lease(self.connection, self.baton_prefix)
        job.meta.update(baton_site=self.baton_site, baton_token=record.token)
        job.save_meta()
        self.stall()
        return SimpleWorker.execute_job(self, job, queue)


def test_the_claim_is_fenced_against_a_worker_paused_between_its_lease_read_and_the_claim(
        shared_redis, raw, r, prefix, make_elector):
    entry = Entry("fenced", "tests.support.jobs:record_tick", every=60, grace=300)
    a = make_elector(shared_redis.url, prefix, "a")
    wait_until(lambda: a.is_leader, timeout=10, what="a to lead")
    old_token = a.token
    scheduler = TickScheduler(raw, prefix, UTC, [entry], is_leader=lambda: True, site="a")
    scheduler.on_elected(old_token)
    tick = float(int(time.time()))
    scheduler.enqueue([(entry, tick)])
    queue = Queue(rq_queue_name(prefix, "baton"), connection=raw)

    def hand_over():
        a.stop()
        b = make_elector(shared_redis.url, prefix, "b")
        wait_until(lambda: b.is_leader, timeout=10, what="b to lead")

    PausingWorker([queue], connection=raw, site="a", prefix=prefix, stall=hand_over).work(
        burst=True, max_jobs=1, logging_level="WARNING")
    assert recorded_runs(r, prefix) == []  # a's stale worker did not run it...
    handed = [job_id.decode() for job_id in raw.lrange(queue.key, 0, -1)]
    assert len(handed) == 1 and "-h" in handed[0]  # ...it handed the tick back, first in the queue
    assert r.hexists(Keys(prefix).ledger, handed[0])
    InlineWorker([queue], connection=raw, site="b", prefix=prefix).work(burst=True, logging_level="WARNING")
    runs = recorded_runs(r, prefix)
    assert [(run["site"], run["tick"]) for run in runs] == [("b", tick)]
    assert runs[0]["token"] > old_token


@pytest.mark.parametrize("block", ["sleep", "socket"])
def test_stop_policy_stops_a_blocked_job_when_its_site_is_cut_off(sites, redis_server, tmp_path, block):
    """Site a reaches Redis through a proxy that then blackholes (a partition);
    b reaches it directly. a's job, blocked in time.sleep or in a socket read,
    must stop within 1 s of a's renew deadline — before b can take over."""
    prefix = "cut"
    r = redis_server.client()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    marks = tmp_path / "marks.jsonl"
    timings = {"BATON_LEASE_TTL": "4", "BATON_RENEW_INTERVAL": "0.5", "BATON_RENEW_DEADLINE": "2.5"}
    env = {**timings, "BATON_TEST_BLOCK": block, "BATON_TEST_SILENT_PORT": str(silent.getsockname()[1]),
           "BATON_TEST_MARKS": str(marks)}
    with TcpProxy(redis_server.port) as proxy:
        sites("a", proxy.url(), prefix, "tests.support.schedule_blocking", env)
        wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10, what="a to lead")
        sites("b", redis_server.url, prefix, "tests.support.schedule_blocking", env)

        def read_marks():
            return [json.loads(line) for line in marks.read_text().splitlines()] if marks.exists() else []

        wait_until(lambda: read_marks(), timeout=15, what="a's job to start")
        cut = time.time()
        proxy.blackhole()
        ended = wait_until(lambda: [m for m in read_marks() if m["event"] == "ended"], timeout=15,
                           what="the job to stop")[0]
        assert ended["how"] == "LeaseLost"
        assert ended["at"] - cut <= 2.5 + 1.0 + 0.3  # renew deadline + 1 s (+ the watch's own read timeout)
        wait_until(lambda: leader_site(r, prefix) == "b", timeout=15, what="b to take over")
        lease = read_lease(r, prefix)
        assert ended["at"] * 1000 < lease.acquired_at  # stopped before b's term began
    silent.close()
    r.close()


def test_an_entry_with_a_set_in_its_kwargs_hashes_the_same_in_every_process():
    code = ("from workers.store import definition_hash; from workers.entries import Entry; "
            "e = Entry('s', 'tests.support.jobs:record_tick', every=5, kwargs={'tags': {'a', 'bb', 'ccc', 'dddd'}})"
            ".check(); print(definition_hash(e, 'UTC'))")
    digests = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"}).stdout.strip()
               for seed in (1, 2, 3, 4)}
    assert len(digests) == 1
    entry = Entry("s", "tests.support.jobs:record_tick", every=5, kwargs={"tags": {"a", "bb", "ccc", "dddd"}}).check()
    assert digests == {definition_hash(entry, "UTC")}


def test_ticks_a_gap_drops_are_recorded_with_their_reason(raw, r, prefix):
    entries = [Entry("latest", "tests.support.jobs:record_tick", every=1),
               Entry("skipper", "tests.support.jobs:record_tick", every=1, missed="skip"),
               Entry("catcher", "tests.support.jobs:record_tick", every=1, missed="catch_up")]
    scheduler = TickScheduler(raw, prefix, UTC, entries, is_leader=lambda: True, site="a")
    scheduler.store.write(entries)
    gap_start = float(int(time.time()) - 10)
    for entry in entries:  # no site led for the last 10 s
        raw.zadd(scheduler.store.key, {scheduler.store.template_id(entry.name): gap_start})
    scheduler.on_elected(7)
    scheduler.start()
    try:
        wait_until(lambda: all(tick_history(r, prefix, e) for e in ("latest", "skipper")), timeout=10,
                   what="the gap's records")
    finally:
        scheduler.stop()
    latest = tick_history(r, prefix, "latest")[-1]
    assert (latest["outcome"], latest["reason"], latest["site"], latest["token"]) == ("skipped", "coalesced", "a", 7)
    assert latest["count"] >= 9 and latest["tick"] == gap_start
    skipped = tick_history(r, prefix, "skipper")[-1]
    assert (skipped["outcome"], skipped["reason"]) == ("skipped", "missed_skip") and skipped["count"] >= 10
    assert tick_history(r, prefix, "catcher") == []  # catch_up's default grace (an hour) covers the whole gap
    queued = [j.decode() for j in raw.lrange(f"rq:queue:{rq_queue_name(prefix, 'baton')}", 0, -1)]
    assert len([j for j in queued if "-catcher-" in j]) >= 10
