"""A Redis failover seen from one server: a reconnect that reaches another
server process (here: a restart without persistence, which loses every key
like a promoted replica that missed everything) makes the leader step down,
quarantines the election and lifts the fencing tokens; with replica
acknowledgement on, no term starts and no run is claimed on a write no
replica has (election/primary.py, elector._on_primary_changed, WAIT)."""

from __future__ import annotations

import time

import pytest

from election import ElectionConfig, Identity, Keys, Lease
from election.elector import FAILOVER_TOKEN_STEP
from election.errors import ReplicasBehind
from election.lease import Quarantined
from tests.conftest import FAST
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from workers.claims import claim

# A quarantine long enough to observe, short enough for a test.
QUARANTINED = ElectionConfig(ttl=1.0, renew_interval=0.2, renew_deadline=0.7, retry_backoff_max=0.2,
                             failover_quarantine=2.0)


def restart(server: RedisServer) -> RedisServer:
    """The same address, another server process: a new run_id, no keys."""
    port = server.port
    server.stop()
    return RedisServer(port=port).start()


def test_a_leader_steps_down_when_redis_is_another_server_and_nobody_leads_during_the_quarantine(
        redis_server, make_elector, events, prefix):
    a = make_elector(redis_server.url, prefix, "a", config=QUARANTINED)
    wait_until(lambda: a.is_leader, timeout=10, what="a leads")
    first_token = a.token
    b = make_elector(redis_server.url, prefix, "b", config=QUARANTINED)
    time.sleep(0.5)
    server = restart(redis_server)
    try:
        wait_until(lambda: events.of("demoted", "a"), timeout=10, what="a steps down")
        demoted_at, _, _, reason = events.of("demoted", "a")[0]
        assert reason == "redis_primary_changed"
        client = server.client()
        # The quarantine is in Redis: a candidate that did not see the change waits too.
        pttl = client.pttl(Keys(prefix).quarantine)
        assert 0 < pttl <= 2000
        assert int(client.get(Keys(prefix).fence)) >= first_token + FAILOVER_TOKEN_STEP
        late = make_elector(server.url, prefix, "late", config=QUARANTINED, start=False)
        assert isinstance(late.lease.acquire(), Quarantined)
        wait_until(lambda: a.is_leader or b.is_leader, timeout=15, what="a term after the quarantine")
        elected = [e for e in events.of("elected") if e[0] > demoted_at]
        # The quarantine (2 s) counts from whichever site noticed first; the
        # other notices within its next renewal or wait, and a loaded machine
        # adds some: 0.6 s of slack.
        assert elected[0][0] - demoted_at >= 2.0 - 0.6
        assert elected[0][3] > first_token + FAILOVER_TOKEN_STEP  # tokens never repeat, though every key was lost
        history = [entry for _, entry in client.xrange(Keys(prefix).history)]
        assert any(entry["event"] == "quarantined" and entry["reason"] == "redis_primary_changed"
                   for entry in history)
    finally:
        server.stop()


def test_junk_at_the_quarantine_key_is_reported_and_left_alone(shared_redis, r, prefix, make_elector):
    r.hset(Keys(prefix).quarantine, "someone", "else")
    lease = Lease.from_url(shared_redis.url, Identity(site="a", dyno="web.1"), FAST.ttl_ms, prefix=prefix)
    with pytest.raises(Exception) as caught:
        lease.acquire()
    assert "quarantine" in str(caught.value) and "wrong type hash" in str(caught.value)
    assert r.hgetall(Keys(prefix).quarantine) == {"someone": "else"}
    lease.close()


@pytest.fixture
def primary_and_replica():
    # No delay before the first (diskless) sync: Redis waits 5 s by default
    # for more replicas, and acknowledges nothing until the replica is online.
    primary = RedisServer(extra_args=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    client = primary.client()
    wait_until(lambda: client.info("replication").get("slave0", {}).get("state") == "online", timeout=10,
               what="the replica online")
    # Valkey acknowledges the first write after the sync only at the replica's
    # next periodic ACK (~1 s); later ones within a millisecond or two.
    client.set("warm-up", "1")
    assert client.execute_command("WAIT", 1, 5000) == 1
    yield primary, replica
    client.close()
    replica.stop()
    primary.stop()


def test_with_replica_ack_a_term_needs_a_replica_and_ends_when_it_goes(primary_and_replica, make_elector, events,
                                                                     prefix):
    primary, replica = primary_and_replica
    a = make_elector(primary.url, prefix, "a", replicas_ack=1, replica_ack_timeout=0.1)
    wait_until(lambda: a.is_leader, timeout=10, what="a leads with its writes acknowledged")
    assert replica.client().hget(Keys(prefix).lease, "holder") == a.lease.identity.holder
    replica.kill()
    # Renewals no replica acknowledges do not count: a steps down by its deadline.
    wait_until(lambda: events.of("demoted", "a"), timeout=FAST.renew_deadline + 5, what="a steps down")
    time.sleep(FAST.ttl)
    assert not a.is_leader  # an acquisition no replica has is given back, never a term
    assert primary.client().exists(Keys(prefix).lease) == 0


def test_an_unacknowledged_acquisition_is_given_back(redis_server, prefix):
    lease = Lease.from_url(redis_server.url, Identity(site="a", dyno="web.1"), FAST.ttl_ms, prefix=prefix,
                           replicas_ack=1, replica_ack_timeout=0.05)
    with pytest.raises(ReplicasBehind) as caught:
        lease.acquire()
    assert (caught.value.acked, caught.value.wanted) == (0, 1)
    assert lease.read() is None
    lease.close()


def test_a_tick_claim_no_replica_acknowledged_does_not_run(redis_server, primary_and_replica, prefix):
    for server, expected in ((redis_server, "unreplicated"), (primary_and_replica[0], "claimed")):
        lease = Lease.from_url(server.url, Identity(site="a", dyno="web.1"), 10_000, prefix=prefix)
        token = lease.acquire().token
        verdict = claim(server.client(decode_responses=False), prefix, site="a", token=token, job_id="j1",
                        claim_id=f"{prefix}-e-1", ttl_s=60, entry="e", overlap="allow", replicas_ack=(1, 0.05))
        assert verdict[0] == expected
        lease.close()
