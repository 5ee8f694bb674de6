"""election.outage: a Redis outage is a few lines, whatever the retry rate."""

import logging

from election.outage import SUMMARY_FIRST_S, SUMMARY_MAX_S, OutageLog
from redis.exceptions import ConnectionError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def events(caplog):
    return [r.logfmt for r in caplog.records if hasattr(r, "logfmt")]


def test_one_line_then_summaries_at_doubling_intervals_then_one_on_recovery(caplog):
    caplog.set_level(logging.INFO, logger="baton")
    clock = Clock()
    outage = OutageLog(logging.getLogger("baton.test"), "a", "worker", clock=clock)
    for _ in range(3600):  # an hour of one retry a second
        outage.failed(ConnectionError("Connection refused"))
        clock.now += 1
    outage.succeeded()
    seen = events(caplog)
    assert seen[0]["event"] == "redis_unreachable" and seen[0]["error"] == "ConnectionError: Connection refused"
    summaries = [e for e in seen if e["event"] == "redis_still_unreachable"]
    assert [e["for_s"] for e in summaries[:5]] == [10, 30, 70, 150, 310]  # 10 s, then 20, 40, 80, 160 s apart
    gaps = [b["for_s"] - a["for_s"] for a, b in zip(summaries, summaries[1:])]
    assert max(gaps) == SUMMARY_MAX_S and summaries[0]["for_s"] == SUMMARY_FIRST_S
    assert len(seen) == 1 + len(summaries) + 1 < 20  # not 3600
    assert seen[-1]["event"] == "redis_recovered" and seen[-1]["failures"] == 3600 and seen[-1]["after_s"] == 3600


def test_success_without_an_outage_says_nothing_and_a_new_outage_starts_over(caplog):
    caplog.set_level(logging.INFO, logger="baton")
    clock = Clock()
    outage = OutageLog(logging.getLogger("baton.test"), "a", "scheduler", clock=clock)
    outage.succeeded()
    assert events(caplog) == []
    outage.failed(ConnectionError("x"))
    outage.succeeded()
    outage.failed(ConnectionError("y"))
    outage.succeeded()
    seen = events(caplog)
    assert [e["event"] for e in seen] == ["redis_unreachable", "redis_recovered", "redis_unreachable",
                                          "redis_recovered"]
    assert seen[-1]["failures"] == 1  # counted from the new outage's start
