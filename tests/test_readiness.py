"""Readiness in the lease scripts (election/readiness.py): a candidate whose
site has no live ready mark is not noted as waiting, leaves a free lease to a
ready site that waits, and a leader that is not ready hands the lease over
when a ready site waits — and keeps it when none does."""

import functools
import threading
import time

import pytest

from election import (Acquired, Callbacks, ElectionConfig, LeaseCorrupt, LeaseRecord, NotReady, clear_ready, mark_ready,
                      ready_sites)
from tests.support.waiting import wait_until

LIVE_MS = 60_000

# Quick timings for the electors here (the lease ttl as tests/conftest.py's FAST).
QUICK = ElectionConfig(ttl=1.0, renew_interval=0.2, renew_deadline=0.7, retry_backoff_max=0.2, not_ready_poll=0.1,
                       step_down_hold_off=0.5)


@pytest.fixture
def ready_lease_for(lease_for):
    """Leases that require readiness (Baton's sites' kind)."""
    return functools.partial(lease_for, require_ready=True)


def test_marks_live_for_their_time_and_a_stop_clears_them(r, prefix):
    mark_ready(r, prefix, "a", "w1", LIVE_MS)
    mark_ready(r, prefix, "a", "w2", 300)
    mark_ready(r, prefix, "b", "w3", LIVE_MS)
    sites = ready_sites(r, prefix)
    assert set(sites) == {"a", "b"} and set(sites["a"]) == {"w1", "w2"}
    assert 0 < sites["a"]["w2"] <= 300 and LIVE_MS - 5000 < sites["a"]["w1"] <= LIVE_MS
    wait_until(lambda: set(ready_sites(r, prefix)["a"]) == {"w1"}, timeout=5, what="w2's mark to run out")
    clear_ready(r, prefix, "b", "w3")
    assert set(ready_sites(r, prefix)) == {"a"}
    assert 0 < r.pttl(f"{prefix}:lease:ready") <= LIVE_MS  # the key goes with its last mark


def test_a_mark_says_which_site_leads(r, prefix, ready_lease_for):
    assert mark_ready(r, prefix, "a", "w1", LIVE_MS)[1] == ""
    ready_lease_for("a").acquire()
    assert mark_ready(r, prefix, "b", "w2", LIVE_MS)[1] == "a"


def test_junk_at_the_ready_key_is_reported_and_left_and_elections_go_on(r, prefix, ready_lease_for):
    r.set(f"{prefix}:lease:ready", "someone's")
    with pytest.raises(LeaseCorrupt, match="wrong type string"):
        mark_ready(r, prefix, "a", "w1", LIVE_MS)
    with pytest.raises(LeaseCorrupt):
        ready_sites(r, prefix)
    assert r.get(f"{prefix}:lease:ready") == "someone's"
    got = ready_lease_for("a").acquire()  # the requirement is off while junk is there: nobody is stuck
    assert isinstance(got, Acquired) and got.ready


def test_a_site_that_is_not_ready_still_leads_when_no_ready_site_waits(ready_lease_for):
    a = ready_lease_for("a")
    got = a.acquire()
    assert isinstance(got, Acquired) and got.ready is False
    renewed = a.renew(got.token)
    assert renewed is not None and (renewed.ready, renewed.ready_elsewhere) == (False, False)


def test_a_candidate_that_is_not_ready_is_not_noted_as_waiting(r, prefix, ready_lease_for):
    a, b = ready_lease_for("a"), ready_lease_for("b")
    mark_ready(r, prefix, "a", "w1", LIVE_MS)
    assert isinstance(a.acquire(), Acquired)
    seen = b.acquire()
    assert isinstance(seen, NotReady) and seen.record.holder == a.identity.holder
    assert r.zscore(f"{prefix}:lease:waiters", b.identity.holder) is None
    mark_ready(r, prefix, "b", "w2", LIVE_MS)
    assert isinstance(b.acquire(), LeaseRecord)  # ready now: waiting, so a release wakes it
    assert r.zscore(f"{prefix}:lease:waiters", b.identity.holder) is not None


def test_a_free_lease_is_left_to_a_ready_site_that_waits(r, prefix, ready_lease_for):
    a, b, c = ready_lease_for("a"), ready_lease_for("b"), ready_lease_for("c")
    mark_ready(r, prefix, "a", "w1", LIVE_MS)
    mark_ready(r, prefix, "b", "w2", LIVE_MS)
    token = a.acquire().token
    assert isinstance(b.acquire(), LeaseRecord)  # b waits
    assert a.release(token, "test")[0]
    assert c.acquire() == NotReady(None)  # c cannot work, b can and waits
    got = b.acquire()
    assert isinstance(got, Acquired) and got.ready


def test_renew_tells_a_leader_that_is_not_ready_whether_a_ready_site_waits(r, prefix, ready_lease_for):
    a, b = ready_lease_for("a"), ready_lease_for("b")
    mark_ready(r, prefix, "a", "w1", LIVE_MS)
    mark_ready(r, prefix, "b", "w2", LIVE_MS)
    token = a.acquire().token
    assert isinstance(b.acquire(), LeaseRecord)
    renewed = a.renew(token)
    assert (renewed.ready, renewed.ready_elsewhere) == (True, False)
    clear_ready(r, prefix, "a", "w1")
    renewed = a.renew(token)
    assert (renewed.ready, renewed.ready_elsewhere) == (False, True)
    clear_ready(r, prefix, "b", "w2")
    renewed = a.renew(token)
    assert (renewed.ready, renewed.ready_elsewhere) == (False, False)


def test_without_the_requirement_nothing_changes(r, prefix, lease_for):
    a, b = lease_for("a"), lease_for("b")
    got = a.acquire()
    assert isinstance(got, Acquired) and got.ready
    assert isinstance(b.acquire(), LeaseRecord)
    renewed = a.renew(got.token)
    assert (renewed.ready, renewed.ready_elsewhere) == (True, False)


def _said(caplog, event, **fields):
    return [rec.logfmt for rec in caplog.records if getattr(rec, "logfmt", {}).get("event") == event
            and all(rec.logfmt.get(k) == v for k, v in fields.items())]


class Readiness:
    """Records on_readiness_changed calls."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, ready, elsewhere):
        with self.lock:
            self.calls.append((ready, elsewhere))


def test_a_leader_that_stops_being_ready_hands_over_to_a_ready_site(shared_redis, r, prefix, make_elector,
                                                                      events, caplog):
    mark_ready(r, prefix, "a", "w1", LIVE_MS)
    a = make_elector(shared_redis.url, prefix, "a", config=QUICK, require_ready=True)
    wait_until(lambda: a.is_leader, timeout=5, what="a to lead")
    mark_ready(r, prefix, "b", "w2", LIVE_MS)
    b = make_elector(shared_redis.url, prefix, "b", config=QUICK, require_ready=True)
    wait_until(lambda: b.leader is not None and b.leader.site == "a", timeout=5, what="b to see a lead")
    time.sleep(0.5)
    assert a.is_leader and not b.is_leader  # both ready: no reason to move
    clear_ready(r, prefix, "a", "w1")  # a's last worker stopped
    lost_at = time.monotonic()
    wait_until(lambda: b.is_leader, timeout=5, what="b to take over")
    took = time.monotonic() - lost_at
    assert not a.is_leader and a.ready is False and a.ready_elsewhere
    assert took < QUICK.renew_interval + 0.5  # at a's next renewal, released: not the ttl's expiry
    assert any(e[3] == "not_ready" for e in events.of("demoted", "a"))
    assert _said(caplog, "site_not_ready", site="a", leader=True, action="handing over")
    # a stays out while it cannot work, and competes again once it can.
    time.sleep(0.5)
    assert b.is_leader and not a.is_leader
    mark_ready(r, prefix, "a", "w1", LIVE_MS)
    wait_until(lambda: a.ready, timeout=5, what="a to see itself ready")
    b.stop()
    wait_until(lambda: a.is_leader, timeout=5, what="a to take over again")


def test_a_lone_site_that_is_not_ready_keeps_leading_and_says_so(shared_redis, r, prefix, make_elector, caplog):
    seen = Readiness()
    mark_ready(r, prefix, "a", "w1", 400)
    a = make_elector(shared_redis.url, prefix, "a", config=QUICK, require_ready=True,
                     callbacks=Callbacks(on_readiness_changed=seen))
    wait_until(lambda: a.is_leader, timeout=5, what="a to lead")
    wait_until(lambda: a.ready is False, timeout=5, what="a's mark to run out")
    time.sleep(1.0)
    assert a.is_leader and a.ready_elsewhere is False
    said = _said(caplog, "site_not_ready", site="a", leader=True, ready_elsewhere=False)
    assert said and said[0]["action"].startswith("leading anyway")
    wait_until(lambda: (False, False) in seen.calls, timeout=5, what="the callback")

