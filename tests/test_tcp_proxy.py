"""tests/support/tcp_proxy.py: a loopback TCP proxy standing in for the network
between a process and Redis (pass-through, blackhole, heal, reset, close)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis as redis_py
from redis.retry import Retry
from redis.backoff import NoBackoff

from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until


def no_retry():
    return Retry(NoBackoff(), 0)


@pytest.fixture
def proxy(redis_server):
    with TcpProxy(redis_server.port) as p:
        yield p


def through(proxy, **kwargs):
    kwargs.setdefault("decode_responses", True)
    return redis_py.Redis.from_url(proxy.url(), **kwargs)


def test_commands_pass_through(redis_server, proxy):
    assert proxy.url(3) == f"redis://127.0.0.1:{proxy.port}/3" and proxy.port != redis_server.port
    client = through(proxy)
    assert client.ping()
    client.set("k", "v")
    assert redis_server.client().get("k") == "v"
    big = "x" * (5 * 1024 * 1024)  # more than the proxy buffers at once: back-pressure both ways
    client.set("big", big)
    assert client.get("big") == big
    assert redis_py.Redis.from_url(proxy.url(2)).set("in-db-2", 1) and redis_server.client(db=2).get("in-db-2") == "1"
    client.close()


def test_blpop_through_the_proxy_is_woken_by_an_rpush(redis_server, proxy):
    client = through(proxy, socket_timeout=5)
    result = {}
    waiter = threading.Thread(target=lambda: result.update(popped=client.blpop(["q"], timeout=5)))
    started = time.monotonic()
    waiter.start()
    direct = redis_server.client()
    wait_until(lambda: any(c["cmd"] == "blpop" for c in direct.client_list()), timeout=5, what="BLPOP to block")
    direct.rpush("q", "job")
    waiter.join(5)
    assert tuple(result["popped"]) == ("q", "job") and time.monotonic() - started < 2


def test_pubsub_through_the_proxy(redis_server, proxy):
    pubsub = through(proxy).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("news")
    direct = redis_server.client()
    wait_until(lambda: direct.pubsub_numsub("news")[0][1] == 1, timeout=5, what="the subscription")
    direct.publish("news", "hello")
    message = wait_until(lambda: pubsub.get_message(timeout=0.2), timeout=5, what="the message")
    assert message["data"] == "hello"
    pubsub.close()


def test_thirty_concurrent_connections(redis_server, proxy):
    clients = [through(proxy, single_connection_client=True) for _ in range(30)]
    errors = []

    def work(i, client):
        try:
            for n in range(20):
                client.rpush(f"list{i}", n)
            assert client.blpop([f"list{i}"], timeout=2) == (f"list{i}", "0")
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and proxy.connections == 30
    for c in clients:
        c.close()
    wait_until(lambda: proxy.connections == 0, timeout=5, what="the proxy to see the clients go")


def test_blackhole_times_out_proxied_clients_while_direct_clients_work(redis_server, proxy):
    before = through(proxy, socket_timeout=0.5, retry=no_retry(), single_connection_client=True)
    assert before.set("k", "before")
    direct = redis_server.client()
    proxied_id = before.client_id()
    writer = through(proxy, socket_timeout=0.3, retry=no_retry(), single_connection_client=True)

    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(redis_py.TimeoutError):
        before.get("k")
    assert 0.4 < time.monotonic() - started < 2
    with pytest.raises(redis_py.TimeoutError):  # a connection made during the blackhole hangs too
        through(proxy, socket_timeout=0.5, socket_connect_timeout=0.5, retry=no_retry()).get("k")
    assert direct.get("k") == "before" and direct.set("k", "direct")
    # Redis heard no FIN and no RST: the proxied connection is still listed.
    assert proxied_id in {int(c["id"]) for c in direct.client_list()}
    # Bytes are dropped, not buffered: a write sent during the blackhole never lands, even after heal.
    with pytest.raises(redis_py.TimeoutError):
        writer.set("dropped", "1")
    proxy.heal()
    time.sleep(0.1)
    assert direct.get("dropped") is None

    fresh = through(proxy, socket_timeout=2)
    assert fresh.get("k") == "direct"
    # The connection that lived through the blackhole was reset at heal; the client reconnects.
    wait_until(lambda: proxied_id not in {int(c["id"]) for c in direct.client_list()}, timeout=5,
               what="Redis to drop the old proxied connection")
    try:
        assert before.get("k") == "direct"
    except redis_py.ConnectionError:
        assert before.get("k") == "direct"
    for c in (before, writer, fresh, direct):
        c.close()


def test_blackhole_is_silent_at_the_socket_level(redis_server, proxy):
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    sock.sendall(b"PING\r\n")
    assert sock.recv(100) == b"+PONG\r\n"
    proxy.blackhole()
    sock.sendall(b"PING\r\n")
    sock.settimeout(0.3)
    with pytest.raises(socket.timeout):  # no reply, no FIN (b""), no RST
        sock.recv(100)
    late = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)  # accepted, then silence
    late.sendall(b"PING\r\n")
    late.settimeout(0.3)
    with pytest.raises(socket.timeout):
        late.recv(100)
    assert proxy.connections == 2 and proxy.blackholed
    proxy.heal()
    sock.settimeout(2)
    with pytest.raises(ConnectionResetError):
        sock.recv(100)
    sock.close()
    late.close()


def test_reset_all_resets_idle_connections_and_clients_recover(redis_server, proxy):
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    raw.sendall(b"PING\r\n")
    assert raw.recv(100) == b"+PONG\r\n"
    idle = through(proxy, socket_timeout=2, retry=no_retry())
    retrying = through(proxy, socket_timeout=2)  # redis-py's default retry
    first_id, retrying_id = idle.client_id(), retrying.client_id()
    assert proxy.connections == 3

    proxy.reset_all()
    assert proxy.connections == 0
    with pytest.raises(ConnectionResetError):  # an RST, not a FIN
        raw.recv(100)
    raw.close()
    started = time.monotonic()
    try:  # redis-py may notice the dead connection before sending and reconnect at once
        second_id = idle.client_id()
    except redis_py.ConnectionError:
        second_id = idle.client_id()
    assert second_id != first_id
    assert retrying.client_id() != retrying_id
    assert time.monotonic() - started < 1
    idle.close()
    retrying.close()


def test_close_leaves_no_thread_and_no_listener(redis_server):
    before = set(threading.enumerate())
    proxy = TcpProxy(redis_server.port).start()
    client = through(proxy)
    assert client.ping()
    proxy.blackhole()
    proxy.close()
    proxy.close()  # idempotent
    assert set(threading.enumerate()) <= before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
    with pytest.raises(redis_py.ConnectionError):
        client.ping()
    client.close()
    TcpProxy(redis_server.port).close()  # never started: closes cleanly too
