"""Alerts (workers/alerts.py) and the peer dead-man's switch
(workers/watchdog.py), with real scheduler and worker processes, a real
Redis, and a tiny HTTP receiver on loopback standing in for the webhook."""

from __future__ import annotations

import json
import os
import signal
import time
from zoneinfo import ZoneInfo

import pytest

from election import read_lease
from tests.conftest import wait_until
from tests.support.lease import leads_ready
from tests.support.operate_jobs import spans
from tests.support.webhook import WebhookReceiver
from workers import controls
from workers.alerts import SEND_ATTEMPTS, AlertConfig, open_conditions
from workers.entries import Entry
from workers.loader import load_schedule
from workers.store import ScheduleStore
from workers.watchdog import OVERDUE_MARGIN_S, Watchdog

UTC = ZoneInfo("UTC")
SCHEDULE = "tests.support.schedule_alerts"


@pytest.fixture
def receiver():
    made = WebhookReceiver()
    yield made
    made.close()


def test_a_failing_entry_is_one_alert_across_two_sites_and_a_recovery_follows(sites, shared_redis, r, raw, prefix,
                                                                              receiver):
    env = {"BATON_ALERT_WEBHOOK_URL": receiver.url}
    sites("a", shared_redis.url, prefix, SCHEDULE, env)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10, what="a to lead")
    sites("b", shared_redis.url, prefix, SCHEDULE, env)
    # 'failing' fails every second on a: one alert for all of them.
    alert = wait_until(lambda: receiver.alerts("run_failed"), timeout=15, what="the failure alert")[0]
    assert (alert["entry"], alert["site"], alert["error_type"], alert["error_message"]) == (
        "failing", "a", "RuntimeError", "this job always fails")
    assert alert["token"] == read_lease(r, prefix).token and alert["recovered"] is False and alert["attempt"] == 0
    time.sleep(4)  # four more failures
    assert len([a for a in receiver.alerts("run_failed") if a["entry"] == "failing"]) == 1
    # 'flaky' fails twice, then its second retry succeeds: one alert, one recovery.
    controls.run_now(raw, prefix, load_schedule(SCHEDULE), UTC, "flaky", by="test")
    wait_until(lambda: [a for a in receiver.alerts("run_failed") if a["entry"] == "flaky" and a["recovered"]],
               timeout=30, what="flaky's recovery")
    flaky = [a for a in receiver.alerts("run_failed") if a["entry"] == "flaky"]
    assert [a["recovered"] for a in flaky] == [False, True]
    assert flaky[0]["retry_follows"] is True
    assert "failing:failing" in open_conditions(r, prefix) and "failing:flaky" not in open_conditions(r, prefix)
    wait_until(lambda: r.hget(f"{prefix}:alert-counts", "run_failed:sent") == "3", timeout=5,
               what="the three alerts counted as sent")  # counted just after each POST


def test_a_webhook_that_fails_is_retried_a_bounded_number_of_times_and_the_schedule_goes_on(
        sites, shared_redis, r, prefix):
    receiver = WebhookReceiver(fail_first=SEND_ATTEMPTS + 10)  # answers 500 to everything here
    try:
        sites("a", shared_redis.url, prefix, SCHEDULE, {"BATON_ALERT_WEBHOOK_URL": receiver.url})
        wait_until(lambda: len(receiver.alerts(status=500)) >= SEND_ATTEMPTS, timeout=30,
                   what="the alert tried SEND_ATTEMPTS times")
        time.sleep(3)
        assert len(receiver.alerts(status=500)) == SEND_ATTEMPTS  # one alert, tried that often, then given up
        wait_until(lambda: r.hget(f"{prefix}:alert-counts", "run_failed:failed") == "1", timeout=10,
                   what="the failure counted")
        beats = [s for s in spans(r, prefix) if s["entry"] == "beat"]
        assert len(beats) >= 8 and max(s["started"] - s["tick"] for s in beats) < 1.0  # never held up
    finally:
        receiver.close()


def test_a_silent_webhook_times_out_and_the_alert_is_sent_on_a_retry(sites, shared_redis, r, prefix):
    receiver = WebhookReceiver(silent_first=1, silent_s=7)  # longer than the sender's 5 s timeout
    try:
        sites("a", shared_redis.url, prefix, SCHEDULE, {"BATON_ALERT_WEBHOOK_URL": receiver.url})
        wait_until(lambda: receiver.alerts("run_failed") and len(receiver.requests) >= 2, timeout=30,
                   what="the retry after the timeout")
        assert r.hget(f"{prefix}:alert-counts", "run_failed:sent") == "1"
    finally:
        receiver.close()


def test_a_frozen_leader_is_reported_by_the_follower_before_its_lease_runs_out(sites, shared_redis, r, prefix,
                                                                              receiver):
    timings = {"BATON_LEASE_TTL": "20", "BATON_RENEW_INTERVAL": "1", "BATON_RENEW_DEADLINE": "5"}
    env = {**timings, "BATON_ALERT_WEBHOOK_URL": receiver.url, "BATON_ALERT_LEADER_CHANGES": "1"}
    a = sites("a", shared_redis.url, prefix, "tests.support.schedule_empty", env)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10, what="a to lead")
    sites("b", shared_redis.url, prefix, "tests.support.schedule_empty", env)
    changed = wait_until(lambda: receiver.alerts("leader_changed"), timeout=15, what="a's leader_changed")[0]
    assert changed["leader"] == "a"
    for pid in a.scheduler.pids():
        os.kill(pid, signal.SIGSTOP)  # wedged: the whole elector-and-scheduler process
    frozen = time.monotonic()
    try:
        alert = wait_until(lambda: receiver.alerts("not_renewing"), timeout=25, what="the follower's alert")[0]
        took = time.monotonic() - frozen
        print(f"not_renewing raised by the follower {took:.1f} s after the freeze")  # make test -s shows it
        assert alert["seen_by"] == "b" and alert["leader"] == "a" and alert["recovered"] is False
        assert took <= 5 + 10 + 2  # renew deadline + one watchdog interval (+ slack for the POST)
        assert alert["lease_left_s"] > 0  # before the lease ran out: b could not have taken over yet
    finally:
        for pid in a.scheduler.pids():
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: [x for x in receiver.alerts("not_renewing") if x["recovered"]], timeout=40,
               what="the recovery once a leader renews again")


def test_no_leader_and_an_overdue_entry_open_and_close(shared_redis, raw, r, prefix, make_elector):
    entry = Entry("hourly", "tests.support.jobs:record_tick", every=3600)
    alerts = AlertConfig(urls=("http://127.0.0.1:9/unused",), no_leader_after_s=0.2)
    dog = Watchdog(raw, prefix, [entry], UTC, site="b", holder="b/web.1/x", renew_deadline=7.0, alerts=alerts)
    dog.look()
    assert open_conditions(r, prefix) == {}  # free for less than 0.2 s
    time.sleep(0.3)
    dog.look()
    assert open_conditions(r, prefix)["no_leader"]["kind"] == "no_leader"
    a = make_elector(shared_redis.url, prefix, "a")
    wait_until(lambda: a.is_leader, timeout=10, what="a to lead")
    store = ScheduleStore(raw, prefix, UTC)
    store.write([entry])
    overdue_since = time.time() - 3600 - OVERDUE_MARGIN_S - 5  # past its grace (one period) and the margin
    raw.zadd(store.key, {store.template_id("hourly"): overdue_since})
    dog.look()
    opened = open_conditions(r, prefix)
    assert "no_leader" not in opened and opened["overdue:hourly"]["leader"] == "a"
    raw.zadd(store.key, {store.template_id("hourly"): time.time() + 60})  # the leader scheduled it again
    dog.look()
    assert open_conditions(r, prefix) == {}
    outbox = [json.loads(x) for x in r.lrange(f"{prefix}:alerts:outbox", 0, -1)]
    assert [(x["key"], x["recovered"]) for x in outbox] == [
        ("no_leader", False), ("no_leader", True), ("overdue:hourly", False), ("overdue:hourly", True)]


def test_an_entrys_ping_url_gets_start_and_success_or_fail(sites, shared_redis, r, prefix, receiver):
    sites("a", shared_redis.url, prefix, "tests.support.schedule_pings",
          {"BATON_TEST_PING_URL": receiver.url.rsplit("/", 1)[0]})

    def paths():
        return [path for _t, path in receiver.pings]

    wait_until(lambda: {"/good", "/bad/fail"} <= set(paths()), timeout=20, what="both entries' end pings")
    got = paths()
    assert got.index("/good/start") < got.index("/good")
    assert got.index("/bad/start") < got.index("/bad/fail")
    assert "/bad" not in got and "/good/fail" not in got
