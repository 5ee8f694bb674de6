"""Deaths and Redis trouble, with real processes and real signals."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import FAST, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ElectorProcess:
    """tests/support/elector_process.py, with its JSON event lines collected."""

    def __init__(self, url, prefix, site, config=FAST):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.elector_process", url, prefix, site,
             str(config.ttl), str(config.renew_interval), str(config.renew_deadline)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        self.events = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def of(self, event):
        return [e for e in self.events if e["event"] == event]

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def processes():
    started = []
    yield lambda *a, **kw: started.append(ElectorProcess(*a, **kw)) or started[-1]
    for p in started:
        p.close()


def test_sigkilled_holder_is_replaced_only_after_expiry_then_promptly(
    processes, make_elector, shared_redis, prefix, events
):
    holder = processes(shared_redis.url, prefix, "dead")
    wait_until(lambda: holder.of("elected"), what="the child to lead")
    follower = make_elector(shared_redis.url, prefix, "alive")
    wait_until(lambda: follower.leader is not None, what="follower to see the child")
    r = shared_redis.client()
    time.sleep(FAST.renew_interval * 1.5)
    holder.proc.kill()
    holder.proc.wait(5)
    killed_at = time.time()
    # Between the kill and the lease's expiry nobody may lead.
    record = r.hgetall(f"{prefix}:lease")
    expires_at = (int(record["renewed_at"]) + int(record["ttl_ms"])) / 1000
    while time.time() < expires_at - 0.02:
        assert not follower.is_leader
        time.sleep(0.005)
    wait_until(lambda: follower.is_leader, timeout=5, what="takeover after expiry")
    elected_wall = time.time()
    assert elected_wall >= expires_at - 0.005  # never before the lease ran out (ms rounding)
    assert elected_wall - expires_at < 1.0  # promptly (the benchmark measures how promptly)
    assert elected_wall - killed_at <= FAST.ttl + 1.0
    takeover = [f for _, f in r.xrange(f"{prefix}:history") if f["event"] == "takeover"]
    assert takeover and takeover[-1]["previous_holder"].startswith("dead/")


def test_a_release_hands_the_lease_to_a_waiting_follower_even_while_it_is_frozen(
    processes, make_elector, shared_redis, prefix
):
    # The follower's ACQUIRE waits in Redis behind its BLPOP, so the release
    # alone makes it the holder: the handoff costs no round trip of its own.
    from election import ElectionConfig

    config = ElectionConfig(ttl=30, renew_interval=1, renew_deadline=20)
    leader = make_elector(shared_redis.url, prefix, "leader", config)
    wait_until(lambda: leader.is_leader, what="leader to lead")
    follower = processes(shared_redis.url, prefix, "frozen", config)
    r = shared_redis.client()
    wait_until(lambda: any(c["name"] == "baton:frozen:elector" and c["cmd"] == "blpop" and "b" in c["flags"]
                           for c in r.client_list()), what="the follower to block in its wait")
    os.kill(follower.proc.pid, signal.SIGSTOP)
    leader.stop()
    wait_until(lambda: r.hget(f"{prefix}:lease", "site") == "frozen", timeout=2,
               what="the stopped follower to hold the lease")
    os.kill(follower.proc.pid, signal.SIGCONT)
    wait_until(lambda: follower.of("elected"), timeout=10, what="the thawed follower's on_elected")
    assert follower.of("elected")[0]["token"] == 2


def test_redis_killed_and_restarted(make_elector, redis_server, prefix, events):
    electors = [make_elector(redis_server.url, prefix, site) for site in "ab"]
    leader = wait_until(lambda: next((e for e in electors if e.is_leader), None), what="a leader")
    token = leader.token
    # Both have seen the token: only a candidate that did can lift the fence
    # once Redis lost it (a candidate that never saw it cannot know it).
    wait_until(lambda: all(e.leader is not None and e.leader.token == token for e in electors),
               what="both electors seeing the leader")
    threads_before = {t.name for t in threading.enumerate() if t.name.startswith("baton-")}
    redis_server.kill()
    down_at = time.monotonic()
    wait_until(lambda: not leader.is_leader, timeout=FAST.renew_deadline + 1, what="self-fencing")
    assert time.monotonic() - down_at <= FAST.renew_deadline + 0.1
    demoted = wait_until(lambda: [e for e in events.of("demoted") if e[3] == "renew_deadline_missed"],
                         what="on_demoted")
    assert demoted[0][0] - down_at <= FAST.renew_deadline + 0.2
    time.sleep(1.0)  # down for a while: electors keep retrying
    redis_server.start()  # same port, empty dataset: the lease and fence are gone
    new_leader = wait_until(lambda: next((e for e in electors if e.is_leader), None), timeout=10,
                            what="a leader after Redis came back")
    # The fence counter was lost with the data, but the electors remembered token `token`.
    assert new_leader.token > token
    threads_after = {t.name for t in threading.enumerate() if t.name.startswith("baton-")}
    assert threads_before <= threads_after  # no elector or callback thread died


def test_frozen_redis_makes_the_leader_step_down_before_its_lease_could_expire(
    make_elector, redis_server, prefix, events
):
    electors = [make_elector(redis_server.url, prefix, site) for site in "ab"]
    leader = wait_until(lambda: next((e for e in electors if e.is_leader), None), what="a leader")
    r = redis_server.client()
    record = r.hgetall(f"{prefix}:lease")
    last_renewed = int(record["renewed_at"])
    redis_server.freeze()
    try:
        wait_until(lambda: not leader.is_leader, timeout=FAST.ttl + 1, what="self-fencing")
        stepped_down_wall = time.time()
        # The latest renewal the server could have applied was sent at or before
        # the freeze; the lease lives ttl after it.
        assert stepped_down_wall * 1000 < last_renewed + FAST.ttl * 1000 + FAST.renew_interval * 1000
        time.sleep(FAST.ttl)  # frozen well past the ttl
        assert not any(e.is_leader for e in electors)
    finally:
        redis_server.thaw()
    final = wait_until(lambda: next((e for e in electors if e.is_leader), None), timeout=10,
                       what="election to resume after SIGCONT")
    assert final.token > 1
    # The fenced leader records its step-down once Redis answers again; the
    # other elector may have been elected before that write landed.
    wait_until(lambda: "stepped_down" in [f["event"] for _, f in r.xrange(f"{prefix}:history")],
               timeout=5, what="the step-down in the history")


def test_frozen_redis_self_fencing_beats_the_lease_precisely(make_elector, redis_server, prefix):
    """Stronger form: the step-down instant is compared with the lease's
    expiry as the server itself computed it, read just before the freeze."""
    a = make_elector(redis_server.url, prefix, "a")
    wait_until(lambda: a.is_leader)
    r = redis_server.client()
    pttl_ms = r.pttl(f"{prefix}:lease")
    read_at = time.monotonic()
    redis_server.freeze()
    try:
        # Renewals sent after this read cannot extend the lease: Redis is frozen.
        expires_at = read_at + pttl_ms / 1000
        wait_until(lambda: not a.is_leader, timeout=FAST.ttl + 1)
        assert time.monotonic() < expires_at
    finally:
        redis_server.thaw()


def test_a_reconnect_into_a_frozen_redis_is_bounded_by_the_deadline_too(make_elector, redis_server, prefix, events):
    """The server drops the leader's connection, then freezes: the renewal
    must reconnect, the kernel still completes the TCP connect, and the
    client's handshake (CLIENT SETNAME) waits for a reply that never comes.
    That wait counts against the renew deadline like any other, so on_demoted
    runs before the lease can expire — not a socket timeout later."""
    a = make_elector(redis_server.url, prefix, "a")  # socket_timeout 2 s, renew deadline 0.7 s
    wait_until(lambda: a.is_leader)
    r = redis_server.client()
    (conn,) = [c for c in r.client_list() if c["name"] == "baton:a:elector"]
    r.client_kill_filter(_id=conn["id"])
    pttl_ms = r.pttl(f"{prefix}:lease")
    read_at = time.monotonic()
    redis_server.freeze()
    try:
        expires_at = read_at + pttl_ms / 1000  # no renewal can land from here on
        wait_until(lambda: events.of("demoted", "a"), timeout=FAST.ttl + 5, what="a's on_demoted")
        assert events.of("demoted", "a")[0][0] < expires_at
    finally:
        redis_server.thaw()
    wait_until(lambda: a.is_leader, timeout=10, what="a to lead again once Redis answers")
