"""The atomic operations against a real Redis."""

import threading

import pytest

from election import Acquired, LeaseCorrupt, LeaseRecord, read_lease
from election.lease import MAX_WOKEN_PER_RELEASE
from tests.conftest import LEASE_TTL_MS as TTL_MS


def test_acquire_writes_a_readable_hash_with_a_ttl(lease_for, r, prefix):
    a = lease_for("a")
    got = a.acquire()
    assert isinstance(got, Acquired) and got.token == 1 and got.event == "acquired"
    fields = r.hgetall(f"{prefix}:lease")
    assert fields["holder"] == a.identity.holder and fields["site"] == "a" and fields["token"] == "1"
    assert int(fields["renewed_at"]) == int(fields["acquired_at"]) == got.acquired_at
    assert 0 < r.pttl(f"{prefix}:lease") <= TTL_MS
    record = a.read()
    assert isinstance(record, LeaseRecord) and record.holder == a.identity.holder
    assert record.expires_at == record.renewed_at + TTL_MS


def test_second_candidate_gets_the_holders_record_not_the_lease(lease_for):
    a, b = lease_for("a"), lease_for("b")
    a.acquire()
    held = b.acquire()
    assert isinstance(held, LeaseRecord)
    assert held.holder == a.identity.holder and held.token == 1 and 0 < held.pttl_ms <= TTL_MS


def test_renew_and_release_are_compare_and_set(lease_for, r, prefix):
    a, b = lease_for("a"), lease_for("b")
    token = a.acquire().token
    r.pexpire(f"{prefix}:lease", 100)
    assert b.renew(token) is None  # right token, wrong holder
    assert a.renew(token + 1) is None  # right holder, wrong token
    assert r.pttl(f"{prefix}:lease") <= 100
    assert a.renew(token) is not None
    assert r.pttl(f"{prefix}:lease") > 100
    assert b.release(token, "test") == (False, [])
    assert r.exists(f"{prefix}:lease")
    released, problems = a.release(token, "test")
    assert released and problems == []
    assert not r.exists(f"{prefix}:lease")
    assert a.release(token, "test") == (False, [])  # idempotent


def test_release_pushes_a_short_lived_wake_signal(lease_for, r, prefix):
    a = lease_for("a")
    token = a.acquire().token
    a.release(token, "test")
    signal_key = f"{prefix}:lease:released"
    assert r.llen(signal_key) == 1
    assert 0 < r.pttl(signal_key) <= 1000
    assert lease_for("b").wait_then_acquire(1.0).signalled is True
    assert lease_for("c").wait_then_acquire(0.05).signalled is False  # one signal, taken


def test_a_release_wakes_two_waiting_candidates_and_the_others_learn_at_their_next_look(lease_for, r, prefix):
    a = lease_for("a")
    token = a.acquire().token
    waiters = [lease_for(site) for site in "bcd"]
    for lease in waiters:
        assert isinstance(lease.acquire(), LeaseRecord)  # held: noted as waiting
    waiters_key = f"{prefix}:lease:waiters"
    assert set(r.zrange(waiters_key, 0, -1)) == {lease.identity.holder for lease in waiters}
    # The set expires with its last waiter: the lease's time left plus the grace.
    assert TTL_MS < r.pttl(waiters_key) <= TTL_MS + 1000
    a.release(token, "test")
    assert r.llen(f"{prefix}:lease:released") == MAX_WOKEN_PER_RELEASE == 2
    woken = [lease.wait_then_acquire(1.0, token) for lease in waiters]
    assert [w.signalled for w in woken] == [True, True, False]  # the third's wait ran out: no signal left
    # The first takes the lease and is no longer waiting; the others learn it
    # holds the lease in the same reply (the third at the end of its wait),
    # and wait again.
    assert isinstance(woken[0].outcome, Acquired) and woken[0].outcome.token == token + 1
    assert [w.outcome.holder for w in woken[1:]] == [waiters[0].identity.holder] * 2
    assert set(r.zrange(waiters_key, 0, -1)) == {w.identity.holder for w in waiters[1:]}


def test_a_wait_ends_holding_the_lease_the_release_freed(lease_for, r, prefix):
    a, b = lease_for("a"), lease_for("b")
    token = a.acquire().token
    assert isinstance(b.acquire(), LeaseRecord)
    releasing = threading.Timer(0.2, a.release, (token, "test"))
    releasing.start()
    woken = b.wait_then_acquire(5.0, token_floor=token)
    releasing.join()
    assert woken.signalled and woken.signal_problem is None
    assert isinstance(woken.outcome, Acquired) and woken.outcome.token == token + 1
    assert r.hget(f"{prefix}:lease", "holder") == b.identity.holder


def test_a_wait_that_times_out_reports_the_holder(lease_for):
    a, b = lease_for("a"), lease_for("b")
    a.acquire()
    woken = b.wait_then_acquire(0.05)
    assert not woken.signalled and woken.signal_problem is None
    assert isinstance(woken.outcome, LeaseRecord) and woken.outcome.holder == a.identity.holder


def test_a_wait_takes_a_lease_that_expired_silently_meanwhile(lease_for, r, prefix):
    lease_for("a", ttl_ms=100).acquire()
    woken = lease_for("b").wait_then_acquire(0.4)
    assert not woken.signalled  # nobody released: the lease ran out
    assert isinstance(woken.outcome, Acquired) and woken.outcome.event == "takeover"


def test_a_wait_loads_the_acquire_script_if_the_server_lost_it(lease_for, r):
    a, b = lease_for("a"), lease_for("b")
    token = a.acquire().token
    assert isinstance(b.acquire(), LeaseRecord)
    r.script_flush()  # as after a Redis restart
    assert b.wait_then_acquire(0.05).outcome.holder == a.identity.holder
    a.release(token, "test")
    r.script_flush()
    assert isinstance(b.wait_then_acquire(1.0).outcome, Acquired)


def test_waiters_past_their_time_are_not_woken(lease_for, r, prefix):
    a = lease_for("a")
    token = a.acquire().token
    b, c = lease_for("b"), lease_for("c")
    b.acquire()
    c.acquire()
    waiters_key = f"{prefix}:lease:waiters"
    # c's wait ended long ago (it went away without coming back).
    r.zadd(waiters_key, {c.identity.holder: 1})
    a.release(token, "test")
    assert r.llen(f"{prefix}:lease:released") == 1
    assert r.zrange(waiters_key, 0, -1) == [b.identity.holder]


def test_tokens_strictly_increase_and_respect_the_floor(lease_for, r, prefix):
    a, b = lease_for("a"), lease_for("b")
    tokens = []
    for _ in range(3):
        for lease in (a, b):
            got = lease.acquire()
            tokens.append(got.token)
            lease.release(got.token, "test")
    assert tokens == sorted(set(tokens)) and tokens[0] == 1
    # Redis lost the counter (restart without persistence): a candidate that
    # remembers token 40 keeps tokens increasing.
    r.delete(f"{prefix}:fence")
    assert a.acquire(token_floor=40).token == 41
    assert r.get(f"{prefix}:fence") == "41"


def test_own_lease_is_retaken_under_a_new_token(lease_for):
    a = lease_for("a")
    first = a.acquire()
    again = a.acquire()  # e.g. the first reply was lost
    assert isinstance(again, Acquired) and again.token > first.token and again.event == "reacquired"
    assert a.renew(first.token) is None and a.renew(again.token) is not None


def test_history_records_acquire_release_stepdown_and_takeover(lease_for, r, prefix):
    a, b = lease_for("a"), lease_for("b")
    t1 = a.acquire().token
    a.release(t1, "stopped")
    t2 = b.acquire().token
    r.delete(f"{prefix}:lease")  # as if it expired under b
    got = a.acquire()
    assert got.event == "takeover"
    b.release(t2, "lease_lost", event="stepped_down")
    entries = [fields for _, fields in r.xrange(f"{prefix}:history")]
    assert [e["event"] for e in entries] == ["acquired", "released", "acquired", "takeover", "stepped_down"]
    assert entries[3]["previous_holder"] == b.identity.holder and entries[3]["previous_token"] == str(t2)
    assert entries[4]["reason"] == "lease_lost"
    assert [e["event"] for e in a.history(2)] == ["stepped_down", "takeover"]


@pytest.mark.parametrize(
    "plant, problem",
    [
        (lambda r, k: r.set(k, "someone typed SET"), "wrong type string"),
        (lambda r, k: r.set(k, "x", px=60000), "wrong type string"),
        (lambda r, k: r.hset(k, mapping={"holder": "x"}), "missing field site"),
        (lambda r, k: r.hset(k, mapping={"holder": "x", "site": "x", "token": "seven", "acquired_at": 1,
                                         "renewed_at": 1, "ttl_ms": 1}), "field token is not a whole number"),
        (lambda r, k: r.hset(k, mapping={"holder": "x", "site": "x", "token": 1, "acquired_at": 1,
                                         "renewed_at": 1, "ttl_ms": 1}), "no TTL"),
    ],
)
def test_junk_at_the_lease_key_is_reported_and_left_alone(lease_for, r, prefix, plant, problem):
    key = f"{prefix}:lease"
    plant(r, key)
    before = (r.type(key), r.dump(key), r.pttl(key))
    a = lease_for("a")
    for operation in (a.acquire, a.read):
        with pytest.raises(LeaseCorrupt) as info:
            operation()
        assert info.value.key == key and problem in info.value.problem
        assert key in info.value.fix
    assert a.renew(1) is None and a.release(1, "x") == (False, [])
    after = (r.type(key), r.dump(key), r.pttl(key))
    assert after[:2] == before[:2] and (after[2] == -1) == (before[2] == -1)


@pytest.mark.parametrize("token", ["1.5", "0x10", "1e3", "inf", " 12", "1_000", "-", "99999999999999999999"])
def test_a_token_only_lua_reads_as_a_number_is_junk_too(lease_for, r, prefix, token):
    """Lua's tonumber takes these, Python's int() does not (or not as Baton
    wrote them): every reader reports them like any corrupt lease, nobody
    crashes on a ValueError."""
    key = f"{prefix}:lease"
    r.hset(key, mapping={"holder": "x/web.1/b", "site": "x", "token": token, "acquired_at": 1,
                         "renewed_at": 1, "ttl_ms": 60000})
    r.pexpire(key, 60000)
    a = lease_for("a")
    for operation in (a.acquire, a.read, lambda: read_lease(r, prefix)):
        with pytest.raises(LeaseCorrupt, match="field token is not a whole number"):
            operation()
    assert r.hget(key, "token") == token


def test_junk_fence_is_reported_not_overwritten(lease_for, r, prefix):
    r.set(f"{prefix}:fence", "not a number")
    with pytest.raises(LeaseCorrupt, match="not an integer"):
        lease_for("a").acquire()
    assert r.get(f"{prefix}:fence") == "not a number" and not r.exists(f"{prefix}:lease")
    r.delete(f"{prefix}:fence")
    r.sadd(f"{prefix}:fence", "x")
    with pytest.raises(LeaseCorrupt, match="wrong type set"):
        lease_for("a").acquire()


def test_junk_history_or_signal_does_not_block_the_lease(lease_for, r, prefix):
    r.set(f"{prefix}:history", "junk")
    r.set(f"{prefix}:lease:released", "junk")
    a = lease_for("a")
    got = a.acquire()
    assert isinstance(got, Acquired) and "WRONGTYPE" in got.history_error
    released, problems = a.release(got.token, "test")
    assert released
    assert {p.key for p in problems} == {f"{prefix}:history", f"{prefix}:lease:released"}
    assert r.get(f"{prefix}:history") == "junk" and r.get(f"{prefix}:lease:released") == "junk"


def test_junk_waiters_set_is_reported_and_one_candidate_still_woken(lease_for, r, prefix):
    waiters_key = f"{prefix}:lease:waiters"
    r.set(waiters_key, "junk")
    a, b = lease_for("a"), lease_for("b")
    token = a.acquire().token
    assert isinstance(b.acquire(), LeaseRecord)  # held; b is not noted, the junk stays
    released, problems = a.release(token, "test")
    assert released
    assert [(p.key, p.problem) for p in problems] == [(waiters_key, "wrong type string (expected zset)")]
    assert r.get(waiters_key) == "junk" and r.pttl(waiters_key) == -1
    assert b.wait_then_acquire(1.0).signalled is True


def test_junk_signal_key_is_reported_by_a_waiting_candidate(lease_for, r, prefix):
    signal_key = f"{prefix}:lease:released"
    r.hset(signal_key, "typed", "by hand")
    a, b = lease_for("a"), lease_for("b")
    a.acquire()
    woken = b.wait_then_acquire(5.0)  # answered at once: no release can come through junk
    problem = woken.signal_problem
    assert problem.key == signal_key and problem.problem == "wrong type hash (expected list)"
    assert problem.pttl_ms == -1 and "DEL" in problem.fix
    assert not woken.signalled and woken.outcome.holder == a.identity.holder
    assert r.hgetall(signal_key) == {"typed": "by hand"}


def test_junk_signal_key_never_costs_a_lease_the_wait_took(lease_for, r, prefix):
    r.set(f"{prefix}:lease:released", "junk")
    b = lease_for("b")
    woken = b.wait_then_acquire(5.0)
    assert woken.signal_problem.problem == "wrong type string (expected list)"
    assert isinstance(woken.outcome, Acquired)  # the lease was free: taken, and b knows it
    assert r.hget(f"{prefix}:lease", "holder") == b.identity.holder


def test_scripts_are_reloaded_after_script_flush(lease_for, r):
    a = lease_for("a")
    a.acquire()
    r.script_flush()
    assert a.read() is not None
