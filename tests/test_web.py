"""The web process: real gunicorn, real signals, real Redis."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from election import read_lease
from tests.conftest import wait_until
from workers.settings import DEFAULT_WORKER_CONCURRENCY
from tests.support.jobs import enqueue_tick
from tests.support.lease import leader_site, leads_ready
from tests.support.redis_server import RedisServer, free_port
from tests.support.sites import ROOT
from tests.support.web import GUNICORN


def enqueue_slow(shared_redis, prefix, seconds):
    return enqueue_tick(shared_redis.client(decode_responses=False), prefix, "slow", kwargs={"sleep": seconds})


def test_sigterm_with_no_job_releases_at_once_and_sigkill_waits_for_expiry(web, shared_redis, prefix):
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    b = web("b", shared_redis.url, prefix)
    wait_until(lambda: b.has("leader_changed"), timeout=15)
    time.sleep(2)  # b has waited many renew intervals (0.2 s) when the release wakes it
    assert a.stop().clean
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=5)
    assert a.has("job_was_running=False")
    time.sleep(1)  # several renewals of b's term: none is late (its term counts from its wait's start)
    assert not b.has("renewed_late")
    # Now kill b's whole dyno: a newcomer takes over only once the lease expired.
    c = web("c", shared_redis.url, prefix)
    wait_until(lambda: c.has("leader_changed"), timeout=15)
    record = read_lease(r, prefix)
    b.crash()
    killed = time.time()
    wait_until(lambda: leader_site(r, prefix) == "c", timeout=10)
    took_over = time.time()
    assert took_over * 1000 >= read_lease(r, prefix).acquired_at - 5
    assert read_lease(r, prefix).acquired_at >= record.renewed_at + record.ttl_ms - 5
    assert took_over - killed < 5


def test_boot_with_redis_down_binds_at_once_and_elects_when_redis_comes(web, prefix):
    server = RedisServer()  # not started yet: its port refuses connections
    try:
        a = web("a", server.url, prefix, extra_env={"WEB_CONCURRENCY": "3"})
        wait_until(a.bound, timeout=10, what="the port to be bound")
        assert time.monotonic() - a.started < 10
        status, body = a.get("/healthz", auth=None)
        assert status == 200 and json.loads(body)["redis"] == "unreachable"
        server.start()
        r = server.client()
        wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="election once Redis is up")
        wait_until(lambda: json.loads(a.get("/healthz", auth=None)[1])["redis"] == "reachable", timeout=5)
        time.sleep(1)
        names = [c["name"] for c in r.client_list()]
        assert names.count("baton:a:elector") == 1  # WEB_CONCURRENCY=3, one elector per dyno
        assert names.count("baton:a:scheduler") == 1  # shared by the scheduler, watchdog and presence writer
        # The connection budget: elector, scheduler, one per worker (2 by default), and the HTTP worker's.
        assert len([n for n in names if n.startswith("baton:a:")]) <= 3 + DEFAULT_WORKER_CONCURRENCY
    finally:
        server.stop()


def test_auth_and_secrets(web, shared_redis, prefix):
    # A password in REDIS_URL too: it must show nowhere.
    url = shared_redis.url.replace("redis://", "redis://:@")
    r = shared_redis.client()
    a = web("a", url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    assert a.get("/status", auth=None)[0] == 401
    status, body = a.get("/status", auth=("op", "wrong"))
    assert status == 401 and body == ""
    status, body = a.get("/status")
    assert status == 200
    data = json.loads(body)
    assert data["role"] == "leader" and data["leader"]["site"] == "a" and data["time_left_ms"] > 0
    assert a.get("/")[0] == 200 and "Baton" in a.get("/")[1]
    status, metrics = a.get("/metrics")
    assert status == 200 and 'baton_is_leader{site="a"} 1' in metrics
    # Healthy once a worker of the site has marked it ready (issue 15).
    status, body = wait_until(lambda: (h := a.get("/healthz", auth=None)) and '"ready":true' in h[1].replace(" ", "")
                              and h, timeout=15, what="a ready")
    assert status == 200 and json.loads(body) == {"status": "ok", "site": "a", "role": "leader", "redis": "reachable",
                                                  "ready": True}
    for path in ("/status", "/", "/metrics", "/healthz"):
        assert "s3cret-pass" not in a.get(path)[1]
    assert not any("s3cret-pass" in line for line in a.lines)

    # Without credentials configured the operator routes say what to set.
    b = web("b", shared_redis.url, prefix, auth=None)
    wait_until(b.bound, timeout=10)
    status, body = b.get("/status", auth=None)
    assert status == 503 and "BASIC_AUTH_USERNAME" in body and "BASIC_AUTH_PASSWORD" in body


def test_release_endpoint_and_cli(web, shared_redis, prefix):
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    b = web("b", shared_redis.url, prefix)
    wait_until(lambda: b.has("leader_changed"), timeout=15)
    assert b.get("/lease/release", method="POST")[0] == 409
    status, body = a.get("/lease/release", method="POST")
    assert status == 200 and json.loads(body)["leader"]["site"] == "b"
    env = {**a.env}
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "baton", "status"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "leader:   b" in out.stdout
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "baton", "release"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "now leading" in out.stdout
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=10)


def test_keep_awake_requests_the_url_on_schedule(web, shared_redis, prefix):
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(time.monotonic())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        a = web("a", shared_redis.url, prefix, extra_env={
            "KEEP_AWAKE_URL": f"http://127.0.0.1:{server.server_port}/healthz", "KEEP_AWAKE_INTERVAL": "0.5"})
        wait_until(lambda: len(hits) >= 3, timeout=15, what="three keep-awake requests")
        assert a.has("event=keep_awake")
    finally:
        server.shutdown()


def test_a_frozen_leader_never_says_leader_after_its_lease_moved(web, shared_redis, r, prefix):
    """Issue 15: the state file /healthz reads is rewritten every second, and
    counted stale only after 5 s; a leader whose master stalls (its HTTP
    workers still answer), or whose whole dyno freezes past the ttl and
    resumes, must not say leader once the lease moved: /healthz trusts
    "leader" only until the term's renew deadline."""
    import os

    def roles_for(seconds):
        roles, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, body = a.get("/healthz", auth=None)
            if status == 200:
                roles.append(json.loads(body)["role"])
        return roles

    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    b = web("b", shared_redis.url, prefix)
    wait_until(lambda: b.has("leader_changed"), timeout=15)
    # A live leader's file is rewritten before its leader_until passes: every
    # answer says leader (the renew deadline, 0.7 s here, is shorter than the
    # state file's usual 1 s refresh).
    steady = roles_for(2)
    assert steady and set(steady) == {"leader"}, steady
    # The master alone stalls: its HTTP workers answer from its last file.
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: leader_site(r, prefix) == "b", timeout=15, what="b takes over")
        during = roles_for(1.5)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert during and "leader" not in during, during
    # a leads again after b's stop, then its whole dyno freezes past the ttl.
    assert b.stop().clean
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a leads again")
    c = web("c", shared_redis.url, prefix)
    wait_until(lambda: c.has("leader_changed"), timeout=15)
    pids = a.pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: leader_site(r, prefix) == "c", timeout=15, what="c takes over")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    after = roles_for(2)
    assert after and "leader" not in after, after
    assert leader_site(r, prefix) == "c"


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"REDIS_URL": "", "REDIS_TLS_URL": ""}, "REDIS_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"BATON_SITE": "a b"}, "BATON_SITE"),
        ({"BATON_PREFIX": "x:y"}, "BATON_PREFIX"),
        ({"BATON_TIMEZONE": "Nowhere/Town"}, "BATON_TIMEZONE"),
        ({"BATON_LEASE_TTL": "-3"}, "BATON_LEASE_TTL"),
        ({"BATON_RENEW_INTERVAL": "soon"}, "BATON_RENEW_INTERVAL"),
        ({"BATON_RENEW_DEADLINE": "99"}, "BATON_RENEW_DEADLINE"),
        ({"BATON_REDIS_TLS_VERIFY": "sometimes"}, "BATON_REDIS_TLS_VERIFY"),
        ({"BATON_SCHEDULE": "tests.support.bad.bad_cron"}, "nightly"),
        ({"BASIC_AUTH_USERNAME": "op", "BASIC_AUTH_PASSWORD": ""}, "BASIC_AUTH_PASSWORD"),
        ({"KEEP_AWAKE_URL": "example.com"}, "KEEP_AWAKE_URL"),
        ({"KEEP_AWAKE_INTERVAL": "0"}, "KEEP_AWAKE_INTERVAL"),
        ({"BATON_EMBEDDED_WORKER": "maybe"}, "BATON_EMBEDDED_WORKER"),
        ({"BATON_SHUTDOWN_GRACE": "45"}, "BATON_SHUTDOWN_GRACE"),
        ({"PORT": "abc"}, "PORT"),
        ({"REDIS_URL": "redis://127.0.0.1:abc/0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "REDIS_URL must name the Sentinel service"),
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:0,127.0.0.1:26380/baton"}, "REDIS_URL must give each sentinel"),
        ({"BATON_REDIS_REPLICAS_ACK": "yes"}, "BATON_REDIS_REPLICAS_ACK"),
        ({"BATON_SCHEDULE": "tests.support.bad.syntax_error"}, "syntax_error.py, line 4"),
    ],
)
def test_config_errors_stop_gunicorn_with_one_line(shared_redis, env, needle):
    import os

    full = {**os.environ, "REDIS_URL": shared_redis.url, "BATON_SITE": "a", "PORT": str(free_port()), **env}
    done = subprocess.run([GUNICORN, "-c", "app/gunicorn_conf.py", "app:create_app()"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


def test_dashboard_in_headless_chromium_shows_the_leader(web, shared_redis, prefix, tmp_path):
    import re
    import shutil

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: apt-get install chromium (.ci/run installs it)"
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    user, password = a.auth
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path}", "--virtual-time-budget=5000", "--dump-dom",
         f"http://{user}:{password}@127.0.0.1:{a.port}/"],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r'id="leader-site"[^>]*>([^<]*)<', done.stdout)
    assert match and match.group(1) == "a", done.stdout[-2000:]
    assert 'class="role leader"' in done.stdout
    assert re.search(r'id="countdown">\d+\.\d s<', done.stdout)


def test_the_embedded_worker_is_restarted_when_it_dies(web, shared_redis, prefix):
    import os

    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: a.has("worker_spawned"), timeout=15)
    first = int(re.search(r"worker_spawned site=a pid=(\d+)", "\n".join(a.lines)).group(1))
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: a.has("event=worker_died"), timeout=10, what="the supervisor to notice")
    wait_until(lambda: len(re.findall(r"worker_spawned", "\n".join(a.lines))) == 2, timeout=10,
               what="a new worker")
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    enqueue_slow(shared_redis, prefix, 0)  # the new worker runs jobs
    wait_until(lambda: r.llen(f"{prefix}:test:executions") == 1, timeout=15, what="the job to run")


def test_tls_redis_with_a_self_signed_certificate_needs_the_documented_setting(web, tls_redis, prefix):
    url, client = tls_redis
    strict = web("strict", url, prefix)
    wait_until(strict.bound, timeout=10)
    wait_until(lambda: strict.has("CERTIFICATE_VERIFY_FAILED"), timeout=10, what="the certificate error")
    assert json.loads(strict.get("/healthz", auth=None)[1])["redis"] == "unreachable"
    relaxed = web("relaxed", url, prefix, extra_env={"BATON_REDIS_TLS_VERIFY": "none"})
    wait_until(lambda: leader_site(client, prefix) == "relaxed", timeout=15, what="election over TLS")
    wait_until(lambda: relaxed.has("worker_start"), timeout=15)
    wait_until(lambda: any(c["name"] == "baton:relaxed:worker" for c in client.client_list()), timeout=15,
               what="the embedded worker's TLS connection")
    assert json.loads(relaxed.get("/status")[1])["leader"]["site"] == "relaxed"


def test_every_connection_survives_the_server_closing_it(web, shared_redis, prefix):
    """What Heroku does to connections idle for 300 s, done to all of them at once."""
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    wait_until(lambda: a.has("worker_start"), timeout=15)
    time.sleep(1)
    mine = lambda: [c for c in r.client_list() if c["name"].startswith("baton:a:")]
    killed = {c["name"] for c in mine()}
    assert {"baton:a:elector", "baton:a:scheduler", "baton:a:worker"} <= killed
    for c in mine():
        r.client_kill_filter(_id=c["id"])
    token = read_lease(r, prefix).token
    enqueue_slow(shared_redis, prefix, 0)
    wait_until(lambda: r.llen(f"{prefix}:test:executions") == 1, timeout=30, what="a job after the cut")
    assert a.proc.poll() is None and read_lease(r, prefix).token == token  # no crash, no failover
    wait_until(lambda: {c["name"] for c in mine()} >= {"baton:a:elector", "baton:a:worker"}, timeout=15)
    assert not a.has("worker_died")
