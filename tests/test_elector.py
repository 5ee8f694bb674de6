"""The elector's behaviour with a real Redis, in one process."""

import time

from election import Callbacks, ElectionConfig
from tests.conftest import FAST, wait_until


def leader_of(electors):
    leaders = [e for e in electors if e.is_leader]
    assert len(leaders) <= 1
    return leaders[0] if leaders else None


def test_one_of_several_leads_and_the_others_see_it(make_elector, shared_redis, prefix, events):
    electors = [make_elector(shared_redis.url, prefix, site) for site in "abc"]
    leader = wait_until(lambda: leader_of(electors), what="a leader")
    others = [e for e in electors if e is not leader]
    wait_until(lambda: all(e.leader and e.leader.holder == leader.lease.identity.holder for e in others),
               what="followers to see the leader")
    assert leader.token == 1
    assert [e[3] for e in events.of("elected")] == [1]


def test_graceful_stop_hands_over_and_wakes_a_follower(make_elector, shared_redis, prefix, events):
    # A long ttl: a follower that took over before it ran out must have been woken.
    config = ElectionConfig(ttl=30, renew_interval=1, renew_deadline=20)
    a = make_elector(shared_redis.url, prefix, "a", config)
    wait_until(lambda: a.is_leader, what="a to lead")
    b = make_elector(shared_redis.url, prefix, "b", config)
    wait_until(lambda: b.leader is not None, what="b to see a")
    time.sleep(0.1)  # b is now blocked on the release signal
    stopped_at = time.monotonic()
    a.stop()
    wait_until(lambda: b.is_leader, timeout=5, what="b to take over")
    assert time.monotonic() - stopped_at < 5  # far below the 30 s ttl
    assert b.token == 2
    assert events.of("demoted", "a")[0][3] == "stopped"
    wait_until(lambda: events.of("elected", "b"), what="b's on_elected (it runs on b's callback thread)")
    # on_demoted ran before the lease was released.
    assert events.of("demoted", "a")[0][0] <= events.of("elected", "b")[0][0]
    history = [f["event"] for _, f in shared_redis.client().xrange(f"{prefix}:history")]
    assert history == ["acquired", "released", "acquired"]


def test_a_release_wakes_a_spare_follower_too_and_the_rest_learn_at_their_next_look(make_elector, shared_redis,
                                                                                     prefix, events):
    # A 30 s ttl and 8 s waits: a follower that learns of the new leader
    # within a second was woken by the release, not by its own next look.
    config = ElectionConfig(ttl=30, renew_interval=1, renew_deadline=9)
    a = make_elector(shared_redis.url, prefix, "a", config)
    wait_until(lambda: a.is_leader, what="a to lead")
    followers = [make_elector(shared_redis.url, prefix, site, config) for site in "bcd"]
    wait_until(lambda: all(f.leader is not None for f in followers), what="followers to see a")
    time.sleep(0.1)  # all blocked on the release signal
    a.stop()
    new_leader = wait_until(lambda: leader_of(followers), timeout=5, what="a follower to take over")
    holder = new_leader.lease.identity.holder

    def knowing():
        return [f for f in followers if f.leader is not None and f.leader.holder == holder]

    assert len(wait_until(lambda: len(knowing()) >= 2 and knowing(), timeout=1, what="the spare to learn")) >= 2
    wait_until(lambda: len(knowing()) == 3, timeout=config.follower_wait_max + 2,
               what="the follower not woken to learn at its next look")
    for follower in followers:
        if follower is not new_leader:
            site = follower.lease.identity.site
            wait_until(lambda: any(e[3] is not None and e[3].holder == holder for e in events.of("leader", site)),
                       what=f"{site}'s on_leader_changed for the new leader")


def test_junk_signal_key_is_reported_and_expiry_still_taken_over(make_elector, shared_redis, prefix, caplog):
    from election import Identity, Lease

    r = shared_redis.client()
    signal_key = f"{prefix}:lease:released"
    r.set(signal_key, "typed by hand")
    # A holder that never renews, as if its process had died.
    gone = Lease.from_url(shared_redis.url, Identity(site="gone", dyno="web.1"), 1500, prefix=prefix)
    gone.acquire()
    gone.close()
    b = make_elector(shared_redis.url, prefix, "b")
    wait_until(lambda: any(getattr(rec, "logfmt", {}).get("key") == signal_key for rec in caplog.records),
               what="a lease_corrupt line for the signal key")
    assert not b.is_leader
    wait_until(lambda: b.is_leader, timeout=5, what="b to take over once the lease expired")
    assert r.get(signal_key) == "typed by hand"


def test_stop_is_idempotent_and_prompt_for_a_blocked_follower(make_elector, shared_redis, prefix):
    config = ElectionConfig(ttl=30, renew_interval=1, renew_deadline=20)
    a = make_elector(shared_redis.url, prefix, "a", config)
    wait_until(lambda: a.is_leader)
    b = make_elector(shared_redis.url, prefix, "b", config)
    wait_until(lambda: b.leader is not None)
    time.sleep(0.1)
    started = time.monotonic()
    b.stop()
    b.stop()
    assert time.monotonic() - started < 2  # did not wait out its 30 s BLPOP
    assert a.is_leader


def test_step_down_lets_another_site_lead(make_elector, shared_redis, prefix, events):
    a = make_elector(shared_redis.url, prefix, "a")
    wait_until(lambda: a.is_leader)
    b = make_elector(shared_redis.url, prefix, "b")
    wait_until(lambda: b.leader is not None)
    assert b.step_down() is False  # not leader
    assert a.step_down() is True
    wait_until(lambda: b.is_leader, timeout=5, what="b to lead after step-down")
    assert not a.is_leader
    wait_until(lambda: events.of("demoted", "a"), what="a's on_demoted (it runs on a's callback thread)")
    assert events.of("demoted", "a")[0][3] == "step_down"
    # a competes again after its hold-off: stop b, a takes over.
    b.stop()
    wait_until(lambda: a.is_leader, timeout=5, what="a to lead again")


def test_a_raising_callback_is_logged_and_the_loop_goes_on(make_elector, shared_redis, prefix, caplog):
    calls = []

    def explode(token):
        calls.append(token)
        raise RuntimeError("user bug")

    a = make_elector(shared_redis.url, prefix, "a", callbacks=Callbacks(on_elected=explode))
    wait_until(lambda: calls, what="callback")
    time.sleep(FAST.renew_interval * 3)
    assert a.is_leader  # still renewing
    assert any("callback_failed" in r.getMessage() or getattr(r, "logfmt", {}).get("event") == "callback_failed"
               for r in caplog.records)


def test_each_elector_uses_one_named_connection(make_elector, shared_redis, prefix):
    site_a, site_b = f"{prefix}-a", f"{prefix}-b"
    a = make_elector(shared_redis.url, prefix, site_a)
    b = make_elector(shared_redis.url, prefix, site_b)
    wait_until(lambda: a.is_leader or b.is_leader)
    time.sleep(FAST.ttl * 2)  # several renewals and follower cycles
    names = [c["name"] for c in shared_redis.client().client_list()]
    assert names.count(f"baton:{site_a}:elector") == 1
    assert names.count(f"baton:{site_b}:elector") == 1


def test_idle_connection_closed_by_the_server_is_survived(make_elector, shared_redis, prefix):
    # FAST's 0.5 s between a failed renewal and the deadline is less than the
    # stalls this 2-core VM shows now and then (300 ms seen); a stall is a
    # fair reason to fail over, a dropped connection is not — so this test
    # gives the retry the room the defaults give it.
    config = ElectionConfig(ttl=4.0, renew_interval=0.2, renew_deadline=3.0, retry_backoff_max=0.2)
    a = make_elector(shared_redis.url, prefix, f"{prefix}-a", config)
    b = make_elector(shared_redis.url, prefix, f"{prefix}-b", config)
    leader = wait_until(lambda: leader_of([a, b]))
    admin = shared_redis.client()
    token = leader.token
    for _ in range(3):  # what Heroku does to a connection idle for 300 s
        for c in admin.client_list():
            if c["name"].startswith(f"baton:{prefix}-"):
                admin.client_kill_filter(_id=c["id"])
        time.sleep(FAST.renew_interval * 2)
    assert leader.is_leader and leader.token == token  # no failover for a dropped connection
    wait_until(lambda: len([c for c in admin.client_list() if c["name"].startswith(f"baton:{prefix}-")]) == 2,
               what="both to reconnect")


def test_junk_lease_key_keeps_electors_waiting_and_reporting(make_elector, shared_redis, prefix, caplog):
    r = shared_redis.client()
    r.set(f"{prefix}:lease", "typed by hand")
    a = make_elector(shared_redis.url, prefix, "a")
    wait_until(lambda: any(getattr(rec, "logfmt", {}).get("event") == "lease_corrupt" for rec in caplog.records),
               what="a lease_corrupt log line")
    line = next(rec for rec in caplog.records if getattr(rec, "logfmt", {}).get("event") == "lease_corrupt")
    assert line.logfmt["key"] == f"{prefix}:lease" and "DEL" in line.logfmt["fix"]
    time.sleep(0.3)
    assert r.get(f"{prefix}:lease") == "typed by hand" and not a.is_leader
    r.delete(f"{prefix}:lease")  # the operator's fix
    wait_until(lambda: a.is_leader, timeout=FAST.ttl * 3, what="election to resume")


def test_junk_that_expires_is_waited_out(make_elector, shared_redis, prefix):
    r = shared_redis.client()
    r.set(f"{prefix}:lease", "temporary", px=300)
    a = make_elector(shared_redis.url, prefix, "a")
    time.sleep(0.1)
    assert not a.is_leader
    wait_until(lambda: a.is_leader, timeout=3, what="a to lead after the junk expired")


def test_a_step_down_asked_through_redis_is_honoured_at_the_next_renewal(make_elector, shared_redis, prefix, events):
    from election import request_step_down

    a = make_elector(shared_redis.url, prefix, "a")
    wait_until(lambda: a.is_leader)
    b = make_elector(shared_redis.url, prefix, "b")
    wait_until(lambda: b.leader is not None)
    r = shared_redis.client()
    asked = request_step_down(r, prefix)  # e.g. from a one-off dyno
    assert asked.site == "a"
    wait_until(lambda: b.is_leader, timeout=5, what="b to lead")
    assert events.of("demoted", "a")[0][3] == "step_down"
    wait_until(lambda: events.of("elected", "b"), what="b's on_elected (it runs on b's callback thread)")
    # a demoted itself before it released: the term ends before b's begins.
    assert events.of("demoted", "a")[0][0] <= events.of("elected", "b")[0][0]
    assert not r.exists(f"{prefix}:lease:step-down")
    assert request_step_down(r, f"{prefix}-nobody") is None


def test_a_term_taken_at_the_end_of_a_wait_counts_from_the_waits_start(make_elector, shared_redis, prefix, events):
    # The ACQUIRE waits in Redis behind the follower's BLPOP and may run any
    # time during the wait: the only instant known to come before it is the
    # wait's start, so the term must be counted from there — and waits are
    # capped (follower_wait_max = 3.5 - 1.5 = 2 s) so that such a term still
    # has at least renew_interval left, and renews at once.
    config = ElectionConfig(ttl=5, renew_interval=1.5, renew_deadline=3.5)
    assert config.follower_wait_max == 2.0
    a = make_elector(shared_redis.url, prefix, "a", config)
    wait_until(lambda: a.is_leader, what="a to lead")
    b = make_elector(shared_redis.url, prefix, "b", config)
    first_seen = wait_until(lambda: events.of("leader", "b"), what="b to see a")[0][0]
    # b's first wait ends ~2 s after first_seen and the next begins; release
    # ~1 s into that one. Uncapped, b would still be in its first wait (3 s
    # old) and the term would have 0.5 s left; counted from the reply, 3.5 s.
    time.sleep(max(0.0, first_seen + 3.0 - time.monotonic()))
    a.stop()
    term = wait_until(lambda: b.term(), timeout=5, interval=0.002, what="b to lead")
    left = term.valid_until - term.started_at
    assert config.renew_interval <= left <= config.renew_deadline - 0.4
    # Renewed at once: b still leads well after that first term would have ended.
    time.sleep(left + 1.0)
    assert b.is_leader and b.token == term.token


def test_a_lease_won_after_the_deadline_is_given_back_not_announced(make_elector, shared_redis, prefix, events):
    from election import Elector, Identity, Lease

    config = ElectionConfig(ttl=30, renew_interval=1, renew_deadline=20)
    a = make_elector(shared_redis.url, prefix, "a", config)
    wait_until(lambda: a.is_leader, what="a to lead")
    # b's clock can jump, as if b had been frozen between its wait and the reply.
    jump = [0.0]
    lease = Lease.from_url(shared_redis.url, Identity(site="b", dyno="web.1"), config.ttl_ms, prefix=prefix)
    b = Elector(lease, config, events.callbacks("b"), clock=lambda: time.monotonic() + jump[0]).start()
    try:
        wait_until(lambda: b.leader is not None, what="b to see a")
        time.sleep(0.1)  # b is blocked in its wait
        jump[0] = config.renew_deadline + 1
        a.stop()  # b's waiting ACQUIRE takes the lease (token 2), too late to be a term
        wait_until(lambda: b.is_leader, timeout=5, what="b to lead with a fresh term")
        r = shared_redis.client()
        history = [f for _, f in r.xrange(f"{prefix}:history")]
        assert [(f["event"], f["token"], f.get("reason")) for f in history] == [
            ("acquired", "1", None), ("released", "1", "stopped"),
            ("acquired", "2", None), ("stepped_down", "2", "acquired_too_late"),
            ("acquired", "3", None),
        ]
        assert b.token == 3
        wait_until(lambda: events.of("elected", "b"), what="b's on_elected")
        assert [e[3] for e in events.of("elected", "b")] == [3]  # token 2 never announced
    finally:
        b.stop()


def test_stop_gives_back_a_lease_the_cut_wait_took_unseen(make_elector, shared_redis, prefix):
    from election import Identity, Lease

    config = ElectionConfig(ttl=30, renew_interval=1, renew_deadline=20)
    r = shared_redis.client()
    gone = Lease.from_url(shared_redis.url, Identity(site="gone", dyno="web.1"), config.ttl_ms, prefix=prefix)
    gone.acquire()  # a holder that never renews
    gone.close()
    b = make_elector(shared_redis.url, prefix, "b", config)
    wait_until(lambda: b.leader is not None, what="b to see the holder")
    time.sleep(0.1)  # b is blocked in its wait
    # The state stop() can leave behind: b's waiting ACQUIRE ran in Redis and
    # took the lease, and cutting the wait lost the reply. Made by hand here
    # (the race is a microsecond wide): the old lease goes without a release
    # signal, and b's own identity takes it.
    r.delete(f"{prefix}:lease")
    unseen = Lease.from_url(shared_redis.url, b.lease.identity, config.ttl_ms, prefix=prefix)
    token = unseen.acquire().token
    unseen.close()
    assert not b.is_leader
    b.stop()
    assert not r.exists(f"{prefix}:lease")  # not left for the others to wait out 30 s
    last = r.xrevrange(f"{prefix}:history", count=1)[0][1]
    assert (last["event"], last["token"], last["holder"]) == ("released", str(token), b.lease.identity.holder)


def test_an_idle_followers_waits_last_the_full_cap(make_elector, shared_redis, prefix):
    # A wait that times out was answered after its full length: the holder's
    # time left is counted from then, so the next wait is not cut short (a
    # follower counting from the wait's start would wait 1.25-1.75 s here,
    # and ask Redis more often than it needs to).
    config = ElectionConfig(ttl=4, renew_interval=0.5, renew_deadline=2.5)  # waits of at most 2 s
    a = make_elector(shared_redis.url, prefix, "a", config)
    wait_until(lambda: a.is_leader, what="a to lead")
    monitor_client = shared_redis.client()
    signal_key = f"{prefix}:lease:released"
    timeouts = []
    with monitor_client.monitor() as monitor:
        make_elector(shared_redis.url, prefix, "b", config)
        deadline = time.monotonic() + 7
        for command in monitor.listen():
            parts = command["command"].split()
            if parts[:2] == ["BLPOP", signal_key]:
                timeouts.append(float(parts[2]))
            if time.monotonic() > deadline:
                break
    assert len(timeouts) >= 3
    assert all(t == config.follower_wait_max for t in timeouts), timeouts
