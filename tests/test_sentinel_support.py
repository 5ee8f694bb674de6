"""tests/support/sentinel.py and the selective blackhole of tests/support/tcp_proxy.py:
a primary, a replica and three sentinels on loopback, driven with plain redis-py."""

from __future__ import annotations

import time

import pytest
import redis as redis_py
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import RedisServer
from tests.support.sentinel import SentinelDeployment
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS = 1000, 3000
# Kill or partition -> every sentinel names the replica: about 2 to 2.4 s with
# these timings. The bound allows one aborted attempt (a split vote is retried
# after 2 x failover-timeout) and a loaded machine.
PROMOTION_BOUND = (DOWN_AFTER_MS + 2 * FAILOVER_TIMEOUT_MS) / 1000 + 3


def no_retry():
    return Retry(NoBackoff(), 0)


def attempt(fn, *args):
    """fn(*args), or None if Redis could not be reached (a timeout, a reset, no master yet)."""
    try:
        return fn(*args)
    except (redis_py.ConnectionError, redis_py.TimeoutError, redis_py.ReadOnlyError):
        return None


@pytest.fixture
def deployment():
    with SentinelDeployment(down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=FAILOVER_TIMEOUT_MS) as d:
        yield d


# -- the proxy's selective blackhole --------------------------------------------


def test_blackhole_spares_the_connections_that_name_the_marker(redis_server):
    with TcpProxy(redis_server.port) as proxy:
        def client(name=None, **kwargs):
            return redis_py.Redis(host="127.0.0.1", port=proxy.port, client_name=name, socket_timeout=0.5,
                                  socket_connect_timeout=0.5, retry=no_retry(), decode_responses=True, **kwargs)

        site_a, site_b, plain = client("baton:a:elector"), client("baton:b:elector"), client()
        a_id = site_a.client_id()
        assert site_b.ping() and plain.ping() and site_a.set("k", "before")

        proxy.blackhole(spare="baton:a:")
        assert site_a.set("k", "a") and site_a.get("k") == "a" and site_a.client_id() == a_id
        late_a = client("baton:a:worker")  # a connection made during the partition, on A's side
        assert late_a.get("k") == "a"
        for other in (site_b, plain, client("baton:b:worker"), client()):
            with pytest.raises(redis_py.TimeoutError):
                other.get("k")
        # A key that merely mentions the marker does not make a connection A's.
        with pytest.raises(redis_py.TimeoutError):
            client().get("baton:a:elector")
        assert proxy.spared == 2 and proxy.blackholed

        proxy.heal()
        assert site_a.client_id() == a_id  # never interrupted: not reset at heal
        direct = redis_server.client()
        wait_until(lambda: len(direct.client_list()) == 3, timeout=5, what="the cut connections to go")
        assert attempt(site_b.get, "k") in ("a", None) and site_b.get("k") == "a"
        for c in (site_a, site_b, plain, late_a, direct):
            c.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_marker_is_found_after_an_auth_or_hello_handshake(protocol):
    """With a password redis-py sends AUTH (RESP2) or HELLO (RESP3) and waits for
    the reply before CLIENT SETNAME: the proxy lets that handshake through."""
    with RedisServer(password="s3cret") as server, TcpProxy(server.port) as proxy:
        def client(name=None):
            return redis_py.Redis(host="127.0.0.1", port=proxy.port, password="s3cret", protocol=protocol,
                                  client_name=name, socket_timeout=0.5, retry=no_retry(), decode_responses=True)

        proxy.blackhole(spare="baton:a:")
        site_a = client("baton:a:elector")
        assert site_a.set("k", "a") and site_a.client_getname() == "baton:a:elector"
        with pytest.raises(redis_py.TimeoutError):
            client("baton:b:elector").get("k")
        with pytest.raises(redis_py.TimeoutError):
            client().get("k")
        proxy.heal()
        site_a.close()


def test_blackhole_only_cuts_the_connections_that_name_the_marker(redis_server):
    with TcpProxy(redis_server.port) as proxy:
        def client(name=None):
            return redis_py.Redis(host="127.0.0.1", port=proxy.port, client_name=name, socket_timeout=0.5,
                                  retry=no_retry(), decode_responses=True)

        site_a, site_b = client("baton:a:elector"), client("baton:b:elector")
        assert site_a.ping() and site_b.ping()
        proxy.blackhole(only=b"baton:a:")
        with pytest.raises(redis_py.TimeoutError):
            site_a.ping()
        assert site_b.ping() and client().ping() and client("baton:b:web").ping()
        with pytest.raises(redis_py.TimeoutError):
            client("baton:a:web").ping()
        proxy.heal()
        assert attempt(site_a.ping) or site_a.ping()
        with pytest.raises(ValueError):
            proxy.blackhole(spare="x", only="y")


# -- the deployment -----------------------------------------------------------------


@pytest.mark.parametrize("proxied", [True, False], ids=["proxied", "direct"])
def test_writes_reach_the_replica_and_the_sentinels_name_every_node(proxied):
    with SentinelDeployment(proxied=proxied) as d:
        hosts = ",".join(f"127.0.0.1:{port}" for _, port in d.sentinel_addresses)
        assert len(d.sentinel_addresses) == 3 and d.url() == f"redis+sentinel://{hosts}/baton/0"
        assert d.url("redis+sentinels", db=2).endswith("/baton/2")
        primary, replica = d.primary(), d.replica()
        assert primary is d.servers[0] and replica is d.servers[1]
        assert d.role(primary) == "master" and d.role(replica) == "slave"
        # Clients are told the proxy's port when proxied, the node's own otherwise.
        assert d.primary_address() == d.address_of(primary)
        assert (d.address_of(primary)[1] != primary.port) == proxied
        sentinel = d.sentinel(socket_timeout=2)
        assert sentinel.discover_slaves("baton") == [d.address_of(replica)]

        client = d.master_for()
        client.set("k", "v")
        d.wait_replicas_synced(timeout=10)
        assert replica.client().get("k") == "v"
        with pytest.raises(redis_py.ReadOnlyError):
            replica.client().set("k", "w")
        client.close()


def test_sigkill_of_the_primary_promotes_the_replica_and_a_managed_client_follows(deployment):
    d = deployment
    client = d.master_for()
    client.set("before", "1")
    d.wait_replicas_synced(timeout=10)
    old, replica = d.primary(), d.replica()

    assert d.kill_primary() is old and d.killed is old
    waited = d.wait_for_new_primary(old, timeout=20)
    assert waited < PROMOTION_BOUND
    assert d.primary() is replica and d.role(replica) == "master"
    # The pooled connection died with the old primary: redis-py asks the sentinels again.
    wait_until(lambda: attempt(client.set, "after", "2"), timeout=10, what="the client to reach the new primary")
    assert replica.client().get("before") == "1" and replica.client().get("after") == "2"

    assert d.restart_killed_as_replica() is old
    d.wait_replicas_synced(timeout=10)
    assert d.role(old) == "slave" and old.client().get("after") == "2"
    assert d.primary() is replica and d.replica() is old
    client.close()


def test_manual_failover_promotes_the_replica_and_then_demotes_the_old_primary(deployment):
    d = deployment
    old, replica = d.primary(), d.replica()
    pooled = d.master_for()
    pooled.set("before", "1")
    took = d.failover(timeout=20)
    assert took < 10 and d.primary() is replica and d.role(replica) == "master"
    fresh = d.master_for()  # a new client asks the sentinels: the new primary
    fresh.set("after", "1")
    assert replica.client().get("after") == "1"
    # The old primary is still a master until the sentinels turn it into a
    # replica (+convert-to-slave, a few seconds later: see sentinel.py); they
    # then kill its clients, and the pooled client asks the sentinels again.
    demoted_after = d.wait_for_replica(old, timeout=30)
    assert demoted_after < 10 and d.role(old) == "slave"
    wait_until(lambda: attempt(pooled.set, "later", "1"), timeout=10, what="the pooled client to reconnect")
    assert replica.client().get("later") == "1"
    for c in (pooled, fresh):
        c.close()


def test_partition_keeps_site_a_on_the_old_primary_and_heal_demotes_it(deployment):
    d = deployment
    old, replica = d.primary(), d.replica()
    site_a = d.master_for(client_name="baton:a:elector", socket_timeout=1, retry=no_retry())
    plain = d.master_for(socket_timeout=1, retry=no_retry())
    assert site_a.set("k", "start") and plain.get("k") == "start"
    d.wait_replicas_synced(timeout=10)
    sentinel_view = d.sentinel_client(0)

    proxy = d.partition_primary(spare="baton:a:")
    started = time.monotonic()
    assert site_a.set("k", "a-during") and site_a.get("k") == "a-during"
    with pytest.raises(redis_py.TimeoutError):
        plain.get("k")

    waited = d.wait_for_new_primary(old, timeout=20)
    assert waited < PROMOTION_BOUND and d.primary() is replica and d.role(replica) == "master"
    # Split brain: A still writes to the old primary, everyone else to the new one.
    assert site_a.set("a-only", "1") and old.client().get("a-only") == "1"
    assert old.client().get("k") == "a-during" and d.role(old) == "master"
    wait_until(lambda: attempt(plain.set, "k", "b"), timeout=10, what="the plain client to reach the new primary")
    assert replica.client().get("k") == "b" and replica.client().get("a-only") is None
    # The sentinels list the old primary as a replica of the new one, down.
    [entry] = sentinel_view.sentinel_slaves("baton")
    assert (entry["ip"], entry["port"]) == d.address_of(old)
    wait_until(lambda: sentinel_view.sentinel_slaves("baton")[0]["is_sdown"], timeout=10, what="the old primary's +sdown")
    assert time.monotonic() - started < 30

    d.heal()
    assert site_a.get("k") == "a-during"  # spared: its connection survived the heal
    demoted_after = d.wait_for_replica(old, timeout=35)
    assert d.role(old) == "slave"
    d.wait_replicas_synced(timeout=10)
    # The old primary resynced from the new one: A's writes during the split are gone.
    assert old.client().get("k") == "b" and old.client().get("a-only") is None
    # Sentinel killed A's connections when it demoted the old primary: A asks the sentinels again.
    wait_until(lambda: attempt(site_a.set, "k", "a-after"), timeout=10, what="site A to reach the new primary")
    assert replica.client().get("k") == "a-after"
    assert not proxy.blackholed
    print(f"promoted after {waited:.2f}s, old primary demoted {demoted_after:.2f}s after heal")
    for c in (site_a, plain):
        c.close()


def test_with_proxied_sentinels_site_a_cannot_ask_the_sentinels_either():
    """proxied_sentinels: site A (its Sentinel connections named too) is cut off
    from the sentinels as well, so it cannot cross the partition to the new primary."""
    with SentinelDeployment(proxied_sentinels=True) as d:
        assert [port for _, port in d.sentinel_addresses] == [p.port for p in d.sentinel_proxies]
        old, replica = d.primary(), d.replica()
        short = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}

        def site(name):
            sentinel_kwargs = {"client_name": f"{name}:sentinel", "retry": no_retry(), **short}
            return d.master_for(client_name=f"{name}:elector", sentinel_kwargs=sentinel_kwargs, retry=no_retry(), **short)

        site_a, site_b = site("baton:a"), site("baton:b")
        assert site_a.set("k", "a") and site_b.get("k") == "a"
        d.partition_primary(spare="baton:a:")
        assert site_a.get("k") == "a"  # its connection to the old primary is spared
        d.wait_for_new_primary(old, timeout=20)
        wait_until(lambda: attempt(site_b.set, "k", "b"), timeout=10, what="site B to reach the new primary")
        assert replica.client().get("k") == "b"
        # A fresh client of site A asks the sentinels and hears nothing.
        with pytest.raises(redis_py.sentinel.MasterNotFoundError, match="Timeout"):
            site("baton:a").get("k")
        assert d.sentinel(**short).discover_master("baton") == d.address_of(replica)  # others still can
        d.heal()
        d.wait_for_replica(old, timeout=30)
        wait_until(lambda: attempt(site_a.set, "k", "a-after"), timeout=10, what="site A to reach the new primary")
        assert replica.client().get("k") == "a-after"
        for c in (site_a, site_b):
            c.close()
