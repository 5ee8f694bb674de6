"""The promises of the README, kept on the platforms Baton runs on: a Heroku
dyno stopped or killed as Heroku does it, a container's PID 1 stopped as
docker does it (tests/support/platform.py), real gunicorn, RQ and Redis."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from rq.registry import FailedJobRegistry

from election import read_lease
from tests.conftest import wait_until
from tests.support.jobs import enqueue_tick, recorded_runs
from tests.support.lease import leader_site, leads_ready
from tests.support.output import ROOT
from tests.support.platform import Container, container_unavailable
from tests.support.redis_server import RedisServer, free_port
from tests.support.sites import Proc
from tests.support.web import WebSite
from tests.test_ship import procfile
from workers.entries import rq_queue_name
from workers.runs import last_runs


EMPTY = "tests.support.schedule_empty"


@pytest.fixture
def web(web):
    """conftest's, with a schedule of no entry: only the ticks a test enqueues run."""
    return functools.partial(web, schedule=EMPTY)


def two_sites(web, url, r, prefix, a_env=None):
    """Site a leading with its embedded worker ready, site b following."""
    a = web("a", url, prefix, extra_env=a_env)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a to lead")
    b = web("b", url, prefix)
    wait_until(lambda: b.has("leader_changed"), timeout=15, what="b to follow")
    wait_until(lambda: a.has("worker_start"), timeout=15, what="a's worker")
    return a, b


def raw(server):
    return server.client(decode_responses=False)


# -- a Heroku dyno stop: SIGTERM to every process, twice; SIGKILL at 30 s ------

def test_dyno_stop_with_a_4s_job_finishes_it_records_it_then_hands_over(web, shared_redis, prefix):
    r = shared_redis.client()
    a, b = two_sites(web, shared_redis.url, r, prefix)
    enqueue_tick(raw(shared_redis), prefix, "four", kwargs={"sleep": 4})
    wait_until(lambda: a.has("job_start"), timeout=10)
    report = a.stop()
    assert report.clean, report  # every process of the dyno exited by itself, with 0, before the SIGKILL
    assert leader_site(r, prefix) == "b"
    (run,) = recorded_runs(r, prefix)
    assert run["site"] == "a"  # the job ran to its end on a, its horse untouched by the SIGTERMs
    assert last_runs(r, prefix)["four"]["outcome"] == "succeeded"
    lines = a.lines
    job_end = next(i for i, line in enumerate(lines) if "event=job_end" in line)
    released = next(i for i, line in enumerate(lines) if "event=released" in line)
    assert job_end < released, "the lease was released before the running job finished"
    assert a.has("job_was_running=True") and a.has("sigterm_repeated")


def test_dyno_stop_with_a_40s_job_interrupts_it_at_the_grace_records_it_and_shows_it(web, shared_redis, prefix):
    r = shared_redis.client()
    a, b = two_sites(web, shared_redis.url, r, prefix, a_env={"BATON_SHUTDOWN_GRACE": "3"})
    job_id = enqueue_tick(raw(shared_redis), prefix, "forty", kwargs={"sleep": 40})
    wait_until(lambda: a.has("job_start"), timeout=10)
    report = a.stop()
    assert report.clean and report.seconds < 30, report
    assert leader_site(r, prefix) == "b"
    assert recorded_runs(r, prefix) == []  # the job never reached its end
    run = last_runs(r, prefix)["forty"]
    assert run["outcome"] == "interrupted" and run["site"] == "a" and a.has("event=job_interrupted")
    # Shown where operators look: /status (the dashboard's data) and /metrics, on the site that leads now.
    assert json.loads(b.get("/status")[1])["last_runs"]["forty"]["outcome"] == "interrupted"
    assert 'baton_job_runs_total{entry="forty",outcome="interrupted"} 1' in b.get("/metrics")[1]
    # The entry's default is at most once: the tick is not run again.
    time.sleep(2)
    assert job_id in FailedJobRegistry(rq_queue_name(prefix, "baton"), connection=raw(shared_redis)).get_job_ids()
    assert recorded_runs(r, prefix) == [] and not b.has("job_start")


def test_an_interrupted_tick_whose_entry_says_rerun_runs_again_on_the_next_leader(web, shared_redis, prefix):
    r = shared_redis.client()
    a, b = two_sites(web, shared_redis.url, r, prefix, a_env={"BATON_SHUTDOWN_GRACE": "2"})
    job_id = enqueue_tick(raw(shared_redis), prefix, "again", kwargs={"sleep": 6}, on_interrupt="rerun")
    wait_until(lambda: a.has("job_start"), timeout=10)
    assert a.stop().clean
    wait_until(lambda: recorded_runs(r, prefix), timeout=20, what="the rerun on b")
    (run,) = recorded_runs(r, prefix)
    assert run["site"] == "b" and run["entry"] == "again"
    assert a.has("tick_requeued") and a.has(job_id)
    time.sleep(1)
    assert len(recorded_runs(r, prefix)) == 1  # once


def test_a_job_that_swallows_its_interrupt_is_killed_recorded_and_the_dyno_still_exits_in_time(web, shared_redis,
                                                                                              prefix):
    r = shared_redis.client()
    a, b = two_sites(web, shared_redis.url, r, prefix, a_env={"BATON_SHUTDOWN_GRACE": "2"})
    enqueue_tick(raw(shared_redis), prefix, "stubborn", func="tests.support.jobs:stubborn", kwargs={"seconds": 60})
    wait_until(lambda: a.has("job_start"), timeout=10)
    report = a.stop()
    assert report.clean and report.seconds < 30, report
    assert a.has("event=job_killed")
    assert last_runs(r, prefix)["stubborn"]["outcome"] == "killed"
    assert leader_site(r, prefix) == "b"


def test_a_separate_worker_dyno_lets_its_job_finish_on_a_dyno_stop(shared_redis, prefix):
    r = shared_redis.client()
    web_dyno = WebSite("w", shared_redis.url, prefix, schedule=EMPTY, extra_env={"BATON_EMBEDDED_WORKER": "false"})
    worker_dyno = Proc(["worker"], {**web_dyno.env})
    try:
        wait_until(lambda: leader_site(r, prefix) == "w", timeout=15)
        enqueue_tick(raw(shared_redis), prefix, "four", kwargs={"sleep": 4})
        wait_until(lambda: worker_dyno.has("job_start"), timeout=15)
        report = worker_dyno.stop()
        assert report.clean, report
        assert recorded_runs(r, prefix)[0]["site"] == "w"
        assert last_runs(r, prefix)["four"]["outcome"] == "succeeded"
    finally:
        worker_dyno.close()
        web_dyno.close()


# -- no Baton process outlives its master --------------------------------------

def test_kill_9_of_the_master_during_a_job_leaves_no_process_and_records_the_run(web, shared_redis, prefix):
    r = shared_redis.client()
    a, b = two_sites(web, shared_redis.url, r, prefix)
    enqueue_tick(raw(shared_redis), prefix, "forty", kwargs={"sleep": 40})
    wait_until(lambda: a.has("job_start"), timeout=10)
    a.kill_master()
    wait_until(lambda: not a.pids(), timeout=10, what="every process of the dyno to exit with its master")
    assert last_runs(r, prefix)["forty"]["outcome"] == "interrupted"
    assert recorded_runs(r, prefix) == []
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=10, what="takeover at expiry")


@pytest.mark.parametrize("after_s", [0.05, 0.3, 0.6, 1.0, 2.0])
def test_kill_9_of_the_master_during_boot_leaves_no_process(web, shared_redis, prefix, after_s):
    a = web("a", shared_redis.url, prefix)
    time.sleep(after_s)
    a.kill_master()
    wait_until(lambda: not a.pids(), timeout=10, what="no process left")


@pytest.mark.parametrize("after_s", [0.05, 0.3, 0.6, 1.0])
def test_a_dyno_stop_during_boot_leaves_no_process(web, shared_redis, prefix, after_s):
    a = web("a", shared_redis.url, prefix)
    time.sleep(after_s)
    report = a.stop()
    assert not report.killed and report.seconds < 30, report
    assert not a.pids()


def test_a_leftover_of_a_killed_site_never_runs_a_job_for_its_successor(web, shared_redis, prefix):
    """The orphan of issue 10 (3): after a kill -9 of its master, a site of
    the same name restarts; only the new dyno's worker runs its jobs."""
    r = shared_redis.client()
    first = web("a", shared_redis.url, prefix)
    wait_until(lambda: first.has("worker_start"), timeout=15)
    first.kill_master()
    wait_until(lambda: not first.pids(), timeout=10, what="the first dyno's worker to exit with its master")
    second = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a") and second.has("worker_start"), timeout=20)
    for i in range(3):
        enqueue_tick(raw(shared_redis), prefix, f"e{i}")
    wait_until(lambda: len(recorded_runs(r, prefix)) == 3, timeout=15)
    workers_of_second = {int(p) for p in re.findall(r"worker_spawned site=a pid=(\d+)", "\n".join(second.lines))}
    assert {run["worker_pid"] for run in recorded_runs(r, prefix)} <= workers_of_second


# -- shutdown with Redis frozen: bounded by what is left ------------------------

@pytest.mark.parametrize("job", [None, "stubborn"])
def test_shutdown_with_redis_frozen_ends_every_process_within_30s(web, redis_server, prefix, job):
    r = redis_server.client()
    a, b = two_sites(web, redis_server.url, r, prefix,
                     a_env={"BATON_SHUTDOWN_GRACE": "20", "BATON_LEASE_TTL": "10", "BATON_RENEW_INTERVAL": "2",
                            "BATON_RENEW_DEADLINE": "7"})
    if job:
        enqueue_tick(redis_server.client(decode_responses=False), prefix, job, func="tests.support.jobs:stubborn",
                     kwargs={"seconds": 60})
        wait_until(lambda: a.has("job_start"), timeout=10)
    redis_server.freeze()
    try:
        report = a.stop()
    finally:
        redis_server.thaw()
    assert not report.killed and report.seconds < 30, report  # the worst case: a 20 s grace, a job deaf to it
    assert report.returncode == 0


# -- Redis trouble is a few log lines ------------------------------------------

def test_redis_down_is_a_few_lines_and_the_worker_resumes_in_place(web, prefix):
    server = RedisServer()  # not started: every connection is refused
    try:
        a = web("a", server.url, prefix)
        wait_until(a.bound, timeout=10)
        time.sleep(8)
        during = list(a.lines)
        assert not any("Traceback" in line for line in during)
        # One line per process that talks to Redis (elector, scheduler, worker), not one per retry.
        assert 1 <= sum("event=redis_unreachable" in line for line in during) <= 3, during
        assert not any("redis_still_unreachable" in line for line in during)  # the first summary is at 10 s
        server.start()
        r = server.client()
        wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
        enqueue_tick(server.client(decode_responses=False), prefix, "after")
        wait_until(lambda: recorded_runs(r, prefix), timeout=15, what="a job once Redis is back")
        assert a.has("event=redis_recovered")
        assert not a.has("worker_died")  # the same worker process rode out the outage
        server.kill()  # and once more while running: a leader's worker loses Redis mid-wait
        time.sleep(3)
        server.start()
        r = server.client()
        wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
        enqueue_tick(server.client(decode_responses=False), prefix, "again")
        wait_until(lambda: recorded_runs(r, prefix), timeout=15, what="a job after the second outage")
        assert not a.has("Traceback") and not a.has("worker_died")
    finally:
        server.stop()


# -- a worker whose site never leads says so ------------------------------------

def test_a_worker_whose_site_has_no_elector_warns_naming_both_sites_and_shows_in_status(web, shared_redis, prefix):
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    stray = Proc(["worker"], {**a.env, "BATON_SITE": "worker-7f3a"})  # a worker dyno with its own host name
    try:
        line = wait_until(lambda: next((x for x in stray.lines if "event=site_not_competing" in x), None),
                          timeout=20, what="the warning")
        assert "site=worker-7f3a" in line and "leader_site=a" in line and "BATON_SITE" in line
        # Every worker process of the stray dyno (BATON_WORKER_CONCURRENCY of them) says so.
        strays = wait_until(lambda: [w for w in json.loads(a.get("/status")[1])["workers"]
                                     if w.get("site") == "worker-7f3a" and w["state"] == "site_not_competing"],
                            timeout=20, what="the stray workers in /status")
        assert {w["leader_site"] for w in strays} == {"a"}
        mine = next(w for w in json.loads(a.get("/status")[1])["workers"] if w.get("site") == "a")
        assert mine["state"] == "leading"
    finally:
        stray.close()


def test_a_follower_sites_worker_does_not_warn(web, shared_redis, prefix):
    r = shared_redis.client()
    web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15)
    b = web("b", shared_redis.url, prefix)
    wait_until(lambda: b.has("worker_waiting_for_lease"), timeout=15)
    time.sleep(5)  # FAST timings: the warning would come after 3 s
    assert not b.has("site_not_competing")
    state = next(w for w in json.loads(b.get("/status")[1])["workers"] if w.get("site") == "b")
    assert state["state"] == "waiting" and state["leader_site"] == "a"


# -- a container: the image's command as PID 1, `docker compose stop` -------------

def compose_config() -> dict:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: apt-get install docker-compose (make test installs it)"
    done = subprocess.run([compose, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def dockerfile() -> dict:
    """The Dockerfile's instructions (the last of each), continuation lines joined."""
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.setdefault(word, []).append(rest.strip())
    return out


def build_context() -> set:
    """The files docker-compose sends as the build context: its own Python's
    docker library applying .dockerignore."""
    compose = shutil.which("docker-compose")
    with open(compose) as f:
        python = f.readline()[2:].strip()
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        patterns = [p for p in f.read().splitlines() if p.strip() and not p.startswith("#")]
    done = subprocess.run([python, "-c", "import json, sys; from docker.utils.build import exclude_paths; "
                                         "print(json.dumps(sorted(exclude_paths(sys.argv[1], json.loads(sys.argv[2])))))",
                           ROOT, json.dumps(patterns)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_the_image_runs_the_procfile_command_itself_not_as_root_with_a_healthcheck():
    services = compose_config()["services"]
    image = dockerfile()
    procfile_web = shlex.split(procfile()["web"])
    assert json.loads(image["CMD"][-1]) == procfile_web  # exec form: no shell between docker and gunicorn
    health = json.loads(image["HEALTHCHECK"][-1].split(" CMD ", 1)[1])
    user = image["USER"][-1]
    assert user not in ("root", "0") and any(f" {user}" in run for run in image["RUN"] if "useradd" in run)
    for name in ("app_a", "app_b"):  # (their command: test_ship)
        assert services[name]["healthcheck"]["test"] == ["CMD", *health]
        assert services[name]["stop_grace_period"] == "30s"
    context = build_context()
    assert {"app/gunicorn_conf.py", "workers/worker.py", "election/lease.py", "requirements.txt", "Procfile"} <= context
    assert not [p for p in context if p.startswith((".venv/", ".git/")) or "__pycache__" in p]


@pytest.mark.skipif(container_unavailable() is not None, reason=str(container_unavailable()))
def test_compose_stop_hands_over_at_once_from_pid_1_and_the_healthcheck_answers(shared_redis, prefix):
    """`docker compose stop app_a` with the shipped files: SIGTERM to PID 1 only."""
    r = shared_redis.client()
    services = compose_config()["services"]
    timings = {"BATON_LEASE_TTL": "10", "BATON_RENEW_INTERVAL": "2", "BATON_RENEW_DEADLINE": "7"}  # the defaults
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
           "REDIS_URL": shared_redis.url, "BATON_PREFIX": prefix, "BATON_SCHEDULE": EMPTY,
           **timings}
    a = Container(services["app_a"]["command"], {**env, "BATON_SITE": "a", "PORT": str(free_port())})
    b = None
    try:
        wait_until(lambda: leads_ready(r, prefix, "a"), timeout=20, what="a to lead from PID 1")
        b = WebSite("b", shared_redis.url, prefix, schedule=EMPTY, extra_env=timings)
        wait_until(lambda: b.has("leader_changed"), timeout=15)
        wait_until(lambda: a.has("worker_start"), timeout=15)
        health = [sys.executable if arg == "python" else arg for arg in services["app_b"]["healthcheck"]["test"][1:]]
        assert subprocess.run(health, env={**env, "PORT": str(b.port)}, timeout=10).returncode == 0
        record = read_lease(r, prefix)
        report = a.docker_stop()
        assert report.clean, report  # PID 1 exited 0 by itself, before compose's SIGKILL
        wait_until(lambda: leader_site(r, prefix) == "b", timeout=5)
        # Handed over by a release, not taken at the old lease's expiry 10 s later.
        assert read_lease(r, prefix).acquired_at < record.renewed_at + record.ttl_ms - 5000
        assert not a.pids()
        assert subprocess.run(health, env={**env, "PORT": str(free_port())}, capture_output=True,
                              timeout=10).returncode != 0  # nothing listening: unhealthy
    finally:
        a.close()
        if b is not None:
            b.close()
