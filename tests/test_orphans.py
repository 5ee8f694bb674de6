"""Ticks taken by a worker that died before starting them go back to their queue.

Each test leaves Redis exactly as a killed worker does, using RQ's own dequeue
(BLMOVE into the intermediate list with one queue, BLPOP with several) and
RQ's own execution bookkeeping — then nothing more, as a SIGKILL would.
"""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

import pytest
from rq import Queue, Worker

from tests.conftest import wait_until
from tests.support.inline_worker import InlineWorker
from tests.support.jobs import recorded_runs as executions
from election import Keys
from workers.entries import Entry, rq_queue_name
from workers.claims import parse_ledger_value
from workers.orphans import MAX_REQUEUES, STUCK_AFTER_S, OrphanSweep
from workers.scheduler import TickScheduler

GRACE_ENTRY = Entry("every-second", "tests.support.jobs:record_tick", every=1, missed="catch_up", grace=300)
OTHER_QUEUE_ENTRY = Entry("elsewhere", "tests.support.jobs:record_tick", every=1, queue="other", grace=300)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(autouse=True)
def site_a_leads(shared_redis, prefix, make_elector):
    """Site a holds the lease: its worker's claims pass the fence."""
    elector = make_elector(shared_redis.url, prefix, "a")
    wait_until(lambda: elector.is_leader, timeout=10, what="site a to lead")
    return elector


@pytest.fixture
def scheduler(raw, prefix):
    made = TickScheduler(raw, prefix, ZoneInfo("UTC"), [GRACE_ENTRY, OTHER_QUEUE_ENTRY], is_leader=lambda: True, site="a")
    made.on_elected(1)
    return made


@pytest.fixture
def sweep(raw, prefix, clock):
    return OrphanSweep(raw, prefix, site="a", clock=clock)


def enqueue_tick(scheduler, entry=GRACE_ENTRY):
    tick = float(int(time.time()))
    scheduler.enqueue([(entry, tick)])
    return f"{scheduler.prefix}-{entry.name}-{round(tick * 1000)}"


def queue(raw, prefix, name="baton"):
    return Queue(rq_queue_name(prefix, name), connection=raw)


def run_queued_jobs(raw, prefix, name="baton"):
    InlineWorker([queue(raw, prefix, name)], connection=raw, site="a", prefix=prefix).work(
        burst=True, logging_level="WARNING")


def sweep_until_requeued(sweep, clock):
    assert set(sweep.sweep().values()) == {"taken"}  # first seen taken
    clock.now += STUCK_AFTER_S - 0.5
    assert set(sweep.sweep().values()) == {"taken"}  # not yet: a live worker might still start it
    clock.now += 0.5
    return sweep.sweep()


def test_enqueue_and_ledger_go_together_and_a_run_leaves_the_ledger(raw, prefix, scheduler):
    job_id = enqueue_tick(scheduler)
    ledger = raw.hgetall(Keys(prefix).ledger)
    assert list(ledger) == [job_id.encode()]
    queue_name, deadline = parse_ledger_value(ledger[job_id.encode()].decode())
    assert queue_name == rq_queue_name(prefix, "baton") and deadline == int(job_id.rsplit("-", 1)[1]) / 1000 + 300
    run_queued_jobs(raw, prefix)
    assert [e["tick"] for e in executions(raw, prefix)] == [int(job_id.rsplit("-", 1)[1]) / 1000]
    assert raw.hgetall(Keys(prefix).ledger) == {}


def test_a_job_taken_by_a_dead_worker_goes_back_to_the_front_of_its_queue(raw, prefix, scheduler, sweep, clock):
    job_id = enqueue_tick(scheduler)
    q = queue(raw, prefix)
    job, _ = Queue.dequeue_any([q], timeout=1, connection=raw)  # BLMOVE into the intermediate list; then death
    assert job.id == job_id and raw.lrange(q.intermediate_queue_key, 0, -1) == [job_id.encode()]
    assert sweep_until_requeued(sweep, clock) == {job_id: "requeued"}
    assert raw.lrange(q.key, 0, -1) == [job_id.encode()]
    assert raw.lrange(q.intermediate_queue_key, 0, -1) == []
    assert raw.hget(f"rq:job:{job_id}", "status") == b"queued"
    assert sweep.requeued == 1
    run_queued_jobs(raw, prefix)
    assert len(executions(raw, prefix)) == 1
    assert sweep.sweep() == {}  # the run left the ledger


def test_a_job_whose_execution_began_before_the_worker_died_is_requeued_and_unregistered(raw, prefix, scheduler, sweep, clock):
    job_id = enqueue_tick(scheduler)
    q = queue(raw, prefix)
    job, _ = Queue.dequeue_any([q], timeout=1, connection=raw)
    dead = Worker([q], connection=raw, name=f"{prefix}-dead")
    dead.prepare_execution(job)  # in the started registry, as the parent does just before it forks
    assert [m.decode().split(":")[0] for m in raw.zrange(q.started_job_registry.key, 0, -1)] == [job_id]
    assert sweep_until_requeued(sweep, clock) == {job_id: "requeued"}
    # Gone from the registry, or RQ's cleanup would later fail the job as abandoned while it reruns.
    assert raw.zrange(q.started_job_registry.key, 0, -1) == []
    run_queued_jobs(raw, prefix)
    assert len(executions(raw, prefix)) == 1


def test_a_job_popped_from_one_of_several_queues_is_found_too(raw, prefix, scheduler, sweep, clock):
    """With several queues RQ pops with BLPOP: the job is in no list at all."""
    job_id = enqueue_tick(scheduler, OTHER_QUEUE_ENTRY)
    queues = [queue(raw, prefix, "baton"), queue(raw, prefix, "other")]
    job, _ = Queue.dequeue_any(queues, timeout=1, connection=raw)
    assert job.id == job_id
    assert raw.lrange(queues[1].intermediate_queue_key, 0, -1) == []
    assert sweep_until_requeued(sweep, clock) == {job_id: "requeued"}
    assert raw.lrange(queues[1].key, 0, -1) == [job_id.encode()]


def test_waiting_started_and_finished_jobs_are_left_alone(raw, prefix, scheduler, sweep, clock):
    waiting = enqueue_tick(scheduler)  # no worker yet: waits in its queue, however long
    claimed = enqueue_tick(scheduler, OTHER_QUEUE_ENTRY)
    Queue.dequeue_any([queue(raw, prefix, "other")], timeout=1, connection=raw)
    raw.set(Keys(prefix).run_claim(claimed), "a:1")  # its function began: at most once wins
    assert sweep.sweep() == {waiting: "waiting", claimed: "started"}
    clock.now += 10 * STUCK_AFTER_S
    assert sweep.sweep() == {waiting: "waiting"}
    assert raw.lrange(queue(raw, prefix).key, 0, -1) == [waiting.encode()]
    assert raw.lrange(queue(raw, prefix, "other").key, 0, -1) == []
    assert sweep.requeued == 0
    raw.delete(f"rq:job:{waiting}")  # someone deleted the job by hand; a worker skips its id
    raw.lpop(queue(raw, prefix).key)
    assert sweep.sweep() == {waiting: "gone"}
    assert raw.hgetall(Keys(prefix).ledger) == {}


def test_a_job_that_ended_without_a_claim_leaves_the_ledger(raw, prefix, scheduler, sweep, clock):
    job_id = enqueue_tick(scheduler)
    Queue.dequeue_any([queue(raw, prefix)], timeout=1, connection=raw)
    raw.hset(f"rq:job:{job_id}", "status", "failed")  # e.g. its worker could not load it
    assert sweep.sweep() == {job_id: "ended"}
    assert raw.hgetall(Keys(prefix).ledger) == {}


def test_a_tick_too_late_to_run_leaves_the_ledger(raw, prefix, scheduler):
    tick = time.time() - 5
    scheduler.enqueue([(Entry("late", "tests.support.jobs:record_tick", every=1, grace=1), tick)])
    run_queued_jobs(raw, prefix)
    assert executions(raw, prefix) == []
    assert raw.hgetall(Keys(prefix).ledger) == {}


def test_a_worker_that_wakes_after_the_requeue_finds_the_tick_run(raw, prefix, scheduler, sweep, clock):
    job_id = enqueue_tick(scheduler)
    q = queue(raw, prefix)
    frozen, _ = Queue.dequeue_any([q], timeout=1, connection=raw)  # a worker frozen right after BLMOVE
    assert sweep_until_requeued(sweep, clock) == {job_id: "requeued"}
    run_queued_jobs(raw, prefix)  # the requeued copy runs
    raw.rpush(q.key, job_id)  # the frozen worker wakes up and goes on with the same job
    run_queued_jobs(raw, prefix)
    assert len(executions(raw, prefix)) == 1  # its run claim was taken: the tick ran once


def test_requeues_are_bounded(raw, prefix, scheduler, sweep, clock, caplog):
    job_id = enqueue_tick(scheduler)
    q = queue(raw, prefix)
    for _ in range(MAX_REQUEUES):
        Queue.dequeue_any([q], timeout=1, connection=raw)  # taken by a worker that dies every time
        clock.now += 60
        assert sweep_until_requeued(sweep, clock) == {job_id: "requeued"}
    Queue.dequeue_any([q], timeout=1, connection=raw)
    clock.now += 60
    assert sweep_until_requeued(sweep, clock) == {job_id: "given_up"}
    assert raw.hgetall(Keys(prefix).ledger) == {}
    assert raw.lrange(q.key, 0, -1) == []  # left to RQ's own cleanup of its intermediate list
    assert any(getattr(r, "logfmt", {}).get("event") == "orphan_given_up" for r in caplog.records)


def test_a_ledger_typed_by_hand_is_reported_once_and_ticks_still_run(raw, prefix, scheduler, caplog):
    raw.set(Keys(prefix).ledger, "typed by hand")
    job_id = enqueue_tick(scheduler)  # the enqueue reports it...
    assert scheduler.orphans.sweep() == {}  # ...and the sweeps that follow say nothing new
    assert scheduler.orphans.sweep() == {}
    reports = [r for r in caplog.records if getattr(r, "logfmt", {}).get("event") == "ledger_unreadable"]
    assert len(reports) == 1 and reports[0].logfmt["key"] == Keys(prefix).ledger
    assert raw.get(Keys(prefix).ledger) == b"typed by hand"  # never overwritten
    run_queued_jobs(raw, prefix)
    assert [e["tick"] for e in executions(raw, prefix)] == [int(job_id.rsplit("-", 1)[1]) / 1000]


def test_the_next_sweep_is_due_when_a_suspect_would_count_as_orphaned(raw, prefix, scheduler, sweep, clock):
    enqueue_tick(scheduler)
    Queue.dequeue_any([queue(raw, prefix)], timeout=1, connection=raw)
    sweep.sweep()
    assert sweep.due_in() == pytest.approx(STUCK_AFTER_S)
    clock.now += STUCK_AFTER_S
    assert sweep.sweep_if_due() > STUCK_AFTER_S  # it swept, requeued, and is back to the idle period
    assert sweep.requeued == 1
