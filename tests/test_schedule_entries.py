"""Schedule declarations and tick arithmetic (no Redis needed)."""

import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from workers.entries import Entry, ScheduleError, check_schedule
from workers.ticks import MAX_COUNTED, ON_TIME_WINDOW, next_tick, plan, tick_id

UTC = timezone.utc


def job():  # a module-level function RQ can import
    return "ran"


def ts(*args, zone=UTC):
    return datetime(*args, tzinfo=zone).timestamp()


@pytest.mark.parametrize(
    "entry, message",
    [
        (Entry("bad name!", job, every=5), "name must be"),
        (Entry("both", job, every=5, cron="* * * * *"), "exactly one of"),
        (Entry("neither", job), "exactly one of"),
        (Entry("cron", job, cron="61 * * * *"), "not a 5-field cron"),
        (Entry("cron6", job, cron="* * * * * *"), "not a 5-field cron"),
        (Entry("fast", job, every=0.5), "every must be"),
        (Entry("nofunc", "workers.jobs:no_such_function", every=5), "has no function"),
        (Entry("nomod", "no_such_module:f", every=5), "cannot import module"),
        (Entry("nocolon", "workers.jobs.log_time", every=5), "package.module:function"),
        (Entry("policy", job, every=5, missed="sometimes"), "missed must be one of"),
        (Entry("lost", job, every=5, on_lost_lease="panic"), "on_lost_lease must be"),
        (Entry("stopped", job, every=5, on_interrupt="retry"), "on_interrupt must be one of drop, rerun"),
        (Entry("lambda", lambda: 1, every=5), "module-level function"),
        (Entry("overlap", job, every=5, overlap="replace"), "overlap must be one of skip, buffer_one, allow"),
        (Entry("zone", job, cron="0 3 * * *", timezone="Mars/Olympus"), "timezone must be an IANA zone"),
        (Entry("zone-every", job, every=5, timezone="Europe/Berlin"), "timezone applies to cron entries only"),
        (Entry("retries", job, every=5, retries=11), "retries must be a whole number from 0 to 10"),
        (Entry("retries-neg", job, every=5, retries=-1), "retries must be"),
        (Entry("backoff", job, every=5, retries=2, retry_backoff=0), "retry_backoff must be seconds"),
        (Entry("unstable", job, every=5, kwargs={"client": object()}), "looks different in every process"),
    ],
)
def test_bad_entries_name_the_entry_and_the_fix(entry, message):
    with pytest.raises(ScheduleError, match=message) as info:
        check_schedule([entry])
    assert repr(entry.name) in str(info.value) and "\n" not in str(info.value)


def test_duplicate_names_are_refused():
    with pytest.raises(ScheduleError, match="'twice'.*used twice"):
        check_schedule([Entry("twice", job, every=5), Entry("twice", job, every=6)])


def test_functions_resolve_from_dotted_paths():
    (entry,) = check_schedule([Entry("t", "tests.test_schedule_entries:job", every=5)])
    assert entry.func is job


def test_interval_ticks_fall_on_multiples_of_the_interval():
    entry = Entry("i", job, every=15)
    assert next_tick(entry, ts(2026, 1, 1, 0, 0, 7), UTC) == ts(2026, 1, 1, 0, 0, 15)
    assert next_tick(entry, ts(2026, 1, 1, 0, 0, 15), UTC) == ts(2026, 1, 1, 0, 0, 30)


def test_cron_is_read_in_the_configured_zone_whatever_the_host_tz(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        ny = ZoneInfo("America/New_York")
        entry = Entry("c", job, cron="0 9 * * *")
        # 09:00 in New York, in winter (UTC-5) and across the DST change.
        assert next_tick(entry, ts(2026, 11, 22, 12, 0, zone=UTC), ny) == ts(2026, 11, 22, 14, 0, zone=UTC)
        assert next_tick(entry, ts(2026, 11, 22, 14, 0, zone=UTC), ny) == ts(2026, 11, 23, 9, 0, zone=ny)
        assert next_tick(entry, ts(2027, 3, 13, 15, 0, zone=UTC), ny) == ts(2027, 3, 14, 13, 0, zone=UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_next_times_advance_from_the_scheduled_time_not_from_now():
    entry = Entry("i", job, every=10)
    scheduled = ts(2026, 1, 1, 0, 0, 10)
    run, skipped, following = plan(entry, scheduled, scheduled + 0.8, UTC)  # 800 ms late
    assert run == [scheduled] and not skipped and following == scheduled + 10


@pytest.mark.parametrize(
    "policy, expected_runs",
    [("catch_up", [30, 40, 50]), ("latest", [50]), ("skip", [])],
)
def test_missed_ticks_follow_the_policy(policy, expected_runs):
    entry = Entry("i", job, every=10, grace=25, missed=policy)
    base = ts(2026, 1, 1)
    # Nobody led from 00:00:20 to 00:00:53; grace 25 s leaves 30, 40, 50 live.
    run, skipped, following = plan(entry, base + 20, base + 53, UTC)
    assert [t - base for t in run] == expected_runs
    assert skipped.count == 4 - len(run) and skipped.first == base + 20
    assert following == base + 60


def test_skip_still_runs_an_on_time_tick():
    entry = Entry("i", job, every=10, missed="skip")
    run, _, _ = plan(entry, 100.0, 100.0 + ON_TIME_WINDOW / 2, UTC)
    assert run == [100.0]


def test_default_grace_is_one_period():
    entry = Entry("i", job, every=10)  # latest, grace = 10 s
    assert plan(entry, 100.0, 109.0, UTC)[0] == [100.0]
    assert plan(entry, 100.0, 111.0, UTC)[0] == [110.0]


def test_a_months_old_cron_slot_is_planned_without_walking_every_minute():
    entry = Entry("c", job, cron="* * * * *")  # latest, grace one minute
    now = ts(2026, 7, 1, 12, 0, 30)
    started = time.process_time()
    run, skipped, following = plan(entry, ts(2026, 1, 1), now, UTC)
    assert time.process_time() - started < 1.0  # was ~250k croniter steps
    assert run == [ts(2026, 7, 1, 12, 0)] and following == ts(2026, 7, 1, 12, 1)
    assert skipped.count == MAX_COUNTED + 99 and not skipped.exact and skipped.first == ts(2026, 1, 1)


def test_tick_ids_are_valid_rq_job_ids():
    import re

    assert re.fullmatch(r"[A-Za-z0-9_-]+", tick_id(Entry("log-time", job, every=5), 1795348640.5))
