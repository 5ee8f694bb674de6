"""Cron ticks across daylight-saving changes, per-entry zones, the catch_up
default grace, and ``python -m app check``'s schedule preview — all on fixed
dates (no Redis, no waiting)."""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from itertools import takewhile
from zoneinfo import ZoneInfo

import pytest

from app.__main__ import schedule_preview
from workers import cron_clock
from workers.entries import Entry
from workers.ticks import CATCH_UP_DEFAULT_GRACE_S, MAX_CATCH_UP, grace_of, next_tick, plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def job():  # a module-level function RQ can import
    return "ran"


def utc(*args):
    return datetime(*args, tzinfo=UTC).timestamp()


def forward(entry, start, end, zone):
    """The ticks in (start, end], walked forward with next_tick."""
    ticks, tick = [], next_tick(entry, start, zone)
    while tick <= end:
        ticks.append(tick)
        tick = next_tick(entry, tick, zone)
    return ticks


# (zone, cron, window start and end in UTC, the ticks in it in UTC)
FALL_BACK = [
    # Berlin 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:00-02:59 happens twice.
    (BERLIN, "0 * * * *", utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 3, 30),
     [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]),
    (BERLIN, "30 2 * * *", utc(2026, 10, 23, 12), utc(2026, 10, 26, 12),
     [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    (BERLIN, "*/15 * * * *", utc(2026, 10, 24, 23, 50), utc(2026, 10, 25, 2, 20),
     [utc(2026, 10, 25, 0, m) for m in (0, 15, 30, 45)] + [utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 2, 15)]),
    # New York 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00 UTC; 01:00-01:59 happens twice.
    (NEW_YORK, "0 * * * *", utc(2026, 11, 1, 3, 30), utc(2026, 11, 1, 8, 30),
     [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 1, 7), utc(2026, 11, 1, 8)]),
    (NEW_YORK, "30 1 * * *", utc(2026, 10, 30, 12), utc(2026, 11, 2, 12),
     [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
    (NEW_YORK, "*/15 * * * *", utc(2026, 11, 1, 4, 50), utc(2026, 11, 1, 7, 20),
     [utc(2026, 11, 1, 5, m) for m in (0, 15, 30, 45)] + [utc(2026, 11, 1, 7, 0), utc(2026, 11, 1, 7, 15)]),
]

SPRING_FORWARD = [
    # Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC; 02:00-02:59 does not exist.
    (BERLIN, "0 * * * *", utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 2, 30),
     [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]),
    (BERLIN, "30 2 * * *", utc(2026, 3, 27, 12), utc(2026, 3, 30, 12),
     [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
    (BERLIN, "*/15 * * * *", utc(2026, 3, 29, 0, 40), utc(2026, 3, 29, 1, 20),
     [utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 15)]),
    # New York 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00 UTC; 02:00-02:59 does not exist.
    (NEW_YORK, "0 * * * *", utc(2026, 3, 8, 5, 30), utc(2026, 3, 8, 8, 30),
     [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]),
    (NEW_YORK, "30 2 * * *", utc(2026, 3, 6, 12), utc(2026, 3, 9, 12),
     [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
    (NEW_YORK, "30 1 * * *", utc(2026, 3, 6, 12), utc(2026, 3, 9, 12),  # before the gap: untouched
     [utc(2026, 3, 7, 6, 30), utc(2026, 3, 8, 6, 30), utc(2026, 3, 9, 5, 30)]),
    (NEW_YORK, "*/15 * * * *", utc(2026, 3, 8, 6, 40), utc(2026, 3, 8, 7, 20),
     [utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 15)]),
]

TRANSITIONS = [(BERLIN, utc(2026, 10, 25, 1)), (BERLIN, utc(2026, 3, 29, 1)),
               (NEW_YORK, utc(2026, 11, 1, 6)), (NEW_YORK, utc(2026, 3, 8, 7))]
CRONS = ["30 2 * * *", "30 1 * * *", "0 * * * *", "*/15 * * * *"]


def case_id(cases):
    return [f"{zone.key} {cron}" for zone, cron, *_ in cases]


def zone_id(value):
    return value.key if isinstance(value, ZoneInfo) else f"{value:.0f}"


@pytest.mark.parametrize("zone, cron, start, end, expected", FALL_BACK, ids=case_id(FALL_BACK))
def test_a_repeated_wall_time_runs_once_at_its_first_occurrence(zone, cron, start, end, expected):
    ticks = forward(Entry("c", job, cron=cron), start, end, zone)
    assert ticks == expected
    walls = [cron_clock.wall_of(t, zone) for t in ticks]
    assert len(set(walls)) == len(walls)  # no wall time runs twice
    assert all(datetime.fromtimestamp(t, zone).fold == 0 for t in ticks)


@pytest.mark.parametrize("zone, cron, start, end, expected", SPRING_FORWARD, ids=case_id(SPRING_FORWARD))
def test_a_missing_wall_time_runs_once_at_the_transition(zone, cron, start, end, expected):
    assert forward(Entry("c", job, cron=cron), start, end, zone) == expected


def test_missing_wall_times_map_to_the_transition_instant():
    change = utc(2026, 3, 29, 1)  # 03:00 CEST
    for minute in (0, 15, 30, 45):
        assert cron_clock.instant(datetime(2026, 3, 29, 2, minute), BERLIN) == change
    assert cron_clock.instant(datetime(2026, 3, 29, 3, 0), BERLIN) == change
    assert cron_clock.instant(datetime(2026, 10, 25, 2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)  # CEST, fold=0


@pytest.mark.parametrize("zone, change", TRANSITIONS, ids=zone_id)
@pytest.mark.parametrize("cron", CRONS)
def test_walking_back_agrees_with_walking_forward(zone, change, cron):
    start, end = change - 12 * 3600, change + 12 * 3600  # at most 96 ticks: plan sees them all
    entry = Entry("c", job, cron=cron, missed="catch_up", grace=86400)
    # From two days earlier, so that every instant of the window has a tick before it.
    ticks = forward(entry, start - 2 * 86400, end, zone)
    assert ticks == sorted(set(ticks))  # strictly increasing
    window = [t for t in ticks if t > start]
    back = list(takewhile(lambda t: t > start, cron_clock.ticks_at_or_before(cron, end, zone)))
    assert back[::-1] == window
    run, skipped, following = plan(entry, window[0], end, zone)
    assert run == window and not skipped and following > end
    # From every 5 minutes (and a half second past) in the window, the newest
    # tick at or before and the first after are the forward walk's.
    for now in (start + 300 * i + half for i in range(24 * 12) for half in (0, 0.5)):
        assert cron_clock.latest_at_or_before(cron, now, zone) == max(t for t in ticks if t <= now)
        assert next_tick(entry, now, zone) == min(t for t in ticks + [following] if t > now)


def test_a_gap_over_the_transition_plans_each_wall_time_once():
    entry = Entry("q", job, cron="*/15 * * * *", missed="catch_up", grace=3 * 3600)
    # Nobody led from 02:00 CEST (first pass) until 03:10 CET, an hour after the change.
    run, skipped, following = plan(entry, utc(2026, 10, 25, 0), utc(2026, 10, 25, 2, 10), BERLIN)
    assert run == [utc(2026, 10, 25, 0, m) for m in (0, 15, 30, 45)] + [utc(2026, 10, 25, 2)]
    assert not skipped and following == utc(2026, 10, 25, 2, 15)


def test_an_entrys_own_timezone_overrides_the_default_zone():
    nightly = Entry("n", job, cron="30 2 * * *", timezone="Europe/Berlin")
    assert next_tick(nightly, utc(2026, 3, 28, 12), UTC) == utc(2026, 3, 29, 1)  # 03:00 CEST
    assert next_tick(nightly, utc(2026, 7, 1, 12), NEW_YORK) == utc(2026, 7, 2, 0, 30)  # 02:30 CEST
    run, _, following = plan(nightly, utc(2026, 7, 2, 0, 30), utc(2026, 7, 2, 0, 30, 1), UTC)
    assert run == [utc(2026, 7, 2, 0, 30)] and following == utc(2026, 7, 3, 0, 30)
    assert next_tick(Entry("d", job, cron="30 2 * * *"), utc(2026, 7, 1, 12), UTC) == utc(2026, 7, 2, 2, 30)


def test_catch_up_without_grace_runs_a_half_hour_gap_in_full():
    entry = Entry("m", job, cron="* * * * *", missed="catch_up")
    run, skipped, following = plan(entry, utc(2026, 1, 1, 12), utc(2026, 1, 1, 12, 29, 30), UTC)
    assert run == [utc(2026, 1, 1, 12, m) for m in range(30)]
    assert not skipped and following == utc(2026, 1, 1, 12, 30)


def test_catch_up_without_grace_runs_only_the_last_hour_and_at_most_100():
    minutely = Entry("m", job, cron="* * * * *", missed="catch_up")
    now = utc(2026, 1, 1, 12, 0, 30)  # three hours after the slot fell due
    run, skipped, _ = plan(minutely, utc(2026, 1, 1, 9), now, UTC)
    assert run == [utc(2026, 1, 1, 11, m) for m in range(1, 60)] + [utc(2026, 1, 1, 12)]
    assert skipped.count == 181 - len(run) and skipped.first == utc(2026, 1, 1, 9)
    every_second = Entry("s", job, every=1, missed="catch_up")
    run, _, _ = plan(every_second, now - 3 * 3600, now, UTC)
    assert len(run) == MAX_CATCH_UP and run[-1] == now and now - run[0] < CATCH_UP_DEFAULT_GRACE_S


def test_the_catch_up_default_grace_is_an_hour_or_one_period():
    assert grace_of(Entry("m", job, cron="* * * * *", missed="catch_up"), utc(2026, 1, 1), UTC) == 3600
    assert grace_of(Entry("d", job, cron="0 3 * * *", missed="catch_up"), utc(2026, 1, 1, 3), UTC) == 86400
    assert grace_of(Entry("m", job, cron="* * * * *"), utc(2026, 1, 1), UTC) == 60  # latest: one period
    assert grace_of(Entry("m", job, every=60, missed="catch_up", grace=90), 0.0, UTC) == 90


def test_next_transition_finds_the_offset_change():
    assert cron_clock.next_transition(BERLIN, utc(2026, 6, 1)) == utc(2026, 10, 25, 1)
    assert cron_clock.next_transition(NEW_YORK, utc(2026, 11, 1, 6)) == utc(2027, 3, 14, 7)
    assert cron_clock.next_transition(ZoneInfo("UTC"), utc(2026, 6, 1)) is None


def test_check_previews_each_entrys_runs_and_the_next_dst_change():
    nightly = Entry("nightly", job, cron="30 2 * * *", timezone="Europe/Berlin")
    minutely = Entry("minutely", job, every=60)
    lines = schedule_preview([nightly, minutely], UTC, utc(2026, 11, 23, 16, 25, 10))
    assert lines == [
        {"at": "info", "event": "next_runs", "entry": "nightly", "zone": "Europe/Berlin",
         "runs": "2026-11-24T02:30:00+01:00,2026-11-25T02:30:00+01:00,2026-11-26T02:30:00+01:00"},
        {"at": "info", "event": "dst_runs", "entry": "nightly", "zone": "Europe/Berlin",
         "transition": "2027-03-28T01:00:00Z",
         "runs": "2027-03-26T02:30:00+01:00,2027-03-27T02:30:00+01:00,2027-03-28T03:00:00+02:00,"
                 "2027-03-29T02:30:00+02:00"},
        {"at": "info", "event": "next_runs", "entry": "minutely", "zone": "UTC",
         "runs": "2026-11-23T16:26:00Z,2026-11-23T16:27:00Z,2026-11-23T16:28:00Z"},
    ]
    fall = schedule_preview([nightly], UTC, utc(2026, 6, 1))[1]
    assert fall["transition"] == "2026-10-25T01:00:00Z"  # the second 02:30 (CET) does not run
    assert fall["runs"] == ("2026-10-24T02:30:00+02:00,2026-10-25T02:30:00+02:00,"
                            "2026-10-26T02:30:00+01:00,2026-10-27T02:30:00+01:00")


def test_python_m_app_check_prints_the_preview():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(REDIS_URL="redis://127.0.0.1:1/0", BATON_SITE="t", BATON_SCHEDULE="tests.support.schedule_zones")
    done = subprocess.run([sys.executable, "-m", "app", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "event=config_ok" in lines[0]
    by_event = {line.split(" entry=")[1].split()[0] + " " + line.split(" event=")[1].split()[0]: line
                for line in lines[1:]}
    assert set(by_event) == {"nightly next_runs", "nightly dst_runs", "minutely next_runs"}
    assert "zone=Europe/Berlin" in by_event["nightly next_runs"] and "zone=UTC" in by_event["minutely next_runs"]

    def runs(line):
        return [datetime.fromisoformat(r.replace("Z", "+00:00")) for r in line.split("runs=")[1].split(",")]

    nightly = runs(by_event["nightly next_runs"])
    assert len(nightly) == 3 and nightly == sorted(nightly)
    minutely = runs(by_event["minutely next_runs"])
    assert [b - a for a, b in zip(minutely, minutely[1:])] == [timedelta(minutes=1)] * 2
    change = datetime.fromisoformat(by_event["nightly dst_runs"].split("transition=")[1].split()[0]
                                    .replace("Z", "+00:00"))
    around = runs(by_event["nightly dst_runs"])
    assert len(around) == 4 and around[1] < change <= around[2]
    # Each run is at 02:30 Berlin time, or at the change itself if that skipped 02:30.
    assert all(r.astimezone(BERLIN).strftime("%H:%M") == "02:30" or r == change for r in around)
