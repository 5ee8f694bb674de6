"""The scheduler loop on its own (no worker): every tick of every entry is
enqueued, each wake-up's ticks together, and the loop sleeps until the next."""

from __future__ import annotations

import logging
import time
from zoneinfo import ZoneInfo

from rq import Queue

from tests.conftest import wait_until
from workers.entries import Entry, rq_queue_name
from workers.scheduler import TickScheduler


def run_scheduler(raw, prefix, entries):
    scheduler = TickScheduler(raw, prefix, ZoneInfo("UTC"), entries, is_leader=lambda: True, site="a")
    scheduler.on_elected(1)
    return scheduler.start()


def test_a_1s_entry_gets_every_tick_one_after_the_other(raw, prefix):
    entry = Entry("every-second", "workers.jobs:heartbeat", every=1)
    scheduler = run_scheduler(raw, prefix, [entry])
    try:
        wait_until(lambda: scheduler.enqueued >= 5, timeout=10, what="five ticks")
    finally:
        scheduler.stop()
    ticks = sorted(int(job_id.rsplit("-", 1)[1]) for job_id in Queue(rq_queue_name(prefix, "baton"), connection=raw).job_ids)
    assert len(ticks) >= 5 and all(b - a == 1000 for a, b in zip(ticks, ticks[1:])), ticks


def test_a_thousand_entries_due_together_go_in_one_wake_up(raw, prefix, caplog):
    entries = [Entry(f"e{i}", "workers.jobs:heartbeat", every=5) for i in range(1000)]
    caplog.set_level(logging.INFO, logger="baton.scheduler")
    scheduler = run_scheduler(raw, prefix, entries)
    try:
        wait_until(lambda: scheduler.enqueued >= 1000, timeout=20, what="a thousand ticks")
        time.sleep(0.5)
    finally:
        scheduler.stop()
    q = Queue(rq_queue_name(prefix, "baton"), connection=raw)
    ticks = {int(job_id.rsplit("-", 1)[1]) for job_id in q.job_ids}
    assert q.count == scheduler.enqueued and len(ticks) == scheduler.enqueued // 1000  # each instant once per entry
    lateness = [r.logfmt["lateness_ms"] for r in caplog.records if getattr(r, "logfmt", {}).get("event") == "tick_enqueued"]
    assert len(lateness) == scheduler.enqueued
