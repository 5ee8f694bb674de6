"""What managed Redis allows: a proxy that refuses CLIENT SETNAME (emulated
with an ACL user denied it, as such proxies answer an error) costs the name
and one log line, nothing else; a Redis Cluster endpoint is refused at start
with one line, by the web process, a worker dyno and the release check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from election import Keys
from tests.support.output import ROOT
from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_until
from tests.support.web import GUNICORN


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (so at most 55535)."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture
def cluster_redis():
    server = RedisServer(port=_cluster_port(),
                         extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]).start()
    yield server
    server.stop()


def _one_line(done) -> str:
    lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, (done.returncode, lines)
    return lines[0]


def test_a_cluster_endpoint_is_refused_at_start_with_one_line(cluster_redis, prefix):
    env = {**os.environ, "REDIS_URL": cluster_redis.url, "BATON_SITE": "a", "BATON_PREFIX": prefix,
           "PORT": str(free_port())}
    for argv in ([GUNICORN, "-c", "app/gunicorn_conf.py", "app:create_app()"],
                 [sys.executable, "-m", "workers", "scheduler"],
                 [sys.executable, "-m", "workers", "worker"],
                 [sys.executable, "-m", "app", "check", "--redis"]):
        line = _one_line(subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60))
        assert "Redis Cluster endpoint (cluster_enabled:1)" in line and "redis+sentinel://" in line, (argv, line)


def test_a_proxy_that_refuses_client_setname_costs_only_the_name(web, redis_server, prefix):
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "proxied", "on", ">pw", "~*", "&*", "+@all", "-client|setname")
    url = f"redis://proxied:pw@127.0.0.1:{redis_server.port}/0"
    a = web("a", url, prefix, "tests.support.schedule_1s")
    wait_until(lambda: admin.hget(Keys(prefix).lease, "site") == "a", timeout=20, what="a leads")
    wait_until(lambda: admin.llen(f"{prefix}:test:executions") >= 2, timeout=20, what="ticks run")
    assert a.has("event=redis_client_name_refused")
    clients = admin.client_list()
    assert [c for c in clients if c["user"] == "proxied"] and not [c for c in clients if c["name"].startswith("baton:")]
    status, body = a.get("/healthz")
    assert status == 200, body
