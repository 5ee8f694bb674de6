"""BATON_WORKER_CONCURRENCY: how many jobs one site runs at once, as that many
leader-gated RQ worker processes — in the web dyno (embedded) or in a worker
dyno. Real gunicorn sites and `python -m workers worker` processes, stopped
the way Heroku stops a dyno (tests/support/platform.py)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from election import read_lease
from tests.conftest import wait_until
from tests.support.jobs import enqueue_tick, recorded_runs
from tests.support.lease import leader_site, leads_ready
from tests.support.sites import ROOT, Site
from workers.runs import last_runs, recent_runs, run_counts
from workers.settings import ConfigError, DEFAULT_WORKER_CONCURRENCY, Settings

SCHEDULE = "tests.support.schedule_concurrency"  # long: 5 s every 6 s; beat: every 1 s, grace 2 s


def spawned(dyno) -> list:
    """Pids of the worker processes the dyno's log says were spawned, oldest first."""
    return [int(p) for p in re.findall(r"event=worker_spawned site=\S+ pid=(\d+)", "\n".join(dyno.lines))]


def alive(pid: int) -> bool:
    """Running (a zombie, or a pid now owned by an unrelated process, is not our worker)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"workers" in f.read()
    except OSError:
        return False


def first_long_run(r, prefix):
    """The first finished run of 'long', once the 'beat' ticks that fell due
    while it ran all have a record (a beat tick after its end has one)."""
    runs = recent_runs(r, prefix, 500)[::-1]
    longs = [run for run in runs if run["entry"] == "long" and run["outcome"] == "succeeded"]
    if not longs:
        return None
    end = longs[0]["started_at"] + longs[0]["duration_ms"] / 1000
    if not any(run["entry"] == "beat" and run["tick"] >= end + 1 for run in runs):
        return None
    return longs[0], end, [run for run in runs if run["entry"] == "beat"]


def test_a_second_worker_keeps_a_1s_entry_on_time_while_a_long_job_runs(web, shared_redis, prefix):
    """The same schedule on two sites side by side: with one worker the 1 s
    entry starves behind the long job (its ticks expire); with two it runs
    every second while the long job runs, never expiring."""
    r = shared_redis.client()
    one = web("one", shared_redis.url, f"{prefix}c1", schedule=SCHEDULE,
              extra_env={"BATON_WORKER_CONCURRENCY": "1", "WEB_CONCURRENCY": "1"})
    two = web("two", shared_redis.url, f"{prefix}c2", schedule=SCHEDULE,
              extra_env={"BATON_WORKER_CONCURRENCY": "2", "WEB_CONCURRENCY": "1"})
    wait_until(lambda: two.count("event=worker_start") == 2 and one.count("event=worker_start") == 1, timeout=20,
               what="the workers")
    assert len(spawned(two)) == 2 and len(spawned(one)) == 1
    wait_until(lambda: json.loads(two.get("/status")[1])["process"]["worker"] == {
        "embedded": True, "concurrency": 2, "alive": True, "processes_alive": 2, "restarts": 0}, timeout=5,
        interval=0.2, what="the master's state to count two workers")

    found = {}
    for site in ("one", "two"):
        found[site] = wait_until(lambda: first_long_run(r, f"{prefix}c{1 if site == 'one' else 2}"), timeout=30,
                                 interval=0.2, what=f"a long run on site {site} and the beat ticks after it")
    for site, (long_run, end, beats) in found.items():
        assert long_run["duration_ms"] >= 5000
        # The beat ticks that fell due while the long job ran.
        during = [b for b in beats if long_run["started_at"] <= b["tick"] <= end - 1]
        assert len(during) >= 3, (site, during)
        found[site] = (long_run, end, during)

    long_run, end, during = found["two"]
    assert all(b["outcome"] == "succeeded" and b["lateness_ms"] < 1000 and b["started_at"] < end for b in during), during
    assert run_counts(r, f"{prefix}c2").get(("beat", "expired"), 0) == 0
    assert len({run["worker_pid"] for run in recorded_runs(r, f"{prefix}c2")}) == 2  # both workers ran jobs

    long_run, end, during = found["one"]
    assert all(b["started_at"] >= end - 0.05 for b in during), during  # nothing ran beside the long job
    assert any(b["outcome"] == "expired" for b in during), during  # and it made them miss their grace
    assert run_counts(r, f"{prefix}c1")[("beat", "expired")] >= 1


def test_a_dyno_stop_with_two_jobs_running_lets_both_finish_then_hands_over(web, shared_redis, prefix,
                                                                             make_elector, events):
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix, schedule="tests.support.schedule_empty",
            extra_env={"BATON_WORKER_CONCURRENCY": "2", "WEB_CONCURRENCY": "1"})
    wait_until(lambda: leads_ready(r, prefix, "a") and a.count("event=worker_start") == 2, timeout=20,
               what="site a and its two workers")
    make_elector(shared_redis.url, prefix, "b")
    wait_until(lambda: events.of("leader", "b"), timeout=10, what="b to follow")
    workers = spawned(a)
    raw = shared_redis.client(decode_responses=False)
    for entry in ("j1", "j2"):
        enqueue_tick(raw, prefix, entry, kwargs={"sleep": 3})
    wait_until(lambda: a.count("event=job_start") == 2, timeout=10, what="both jobs to run at once")

    report = a.stop()

    assert report.clean, report  # every process exited by itself, the master with 0
    assert report.seconds < 10, report
    assert not a.pids() and not any(alive(pid) for pid in workers)
    runs = last_runs(r, prefix)
    assert runs["j1"]["outcome"] == runs["j2"]["outcome"] == "succeeded", runs
    executions = recorded_runs(r, prefix)
    assert {run["worker_pid"] for run in executions} == set(workers)  # one job on each worker, side by side
    assert max(run["started"] for run in executions) < min(run["recorded_at"] for run in runs.values())
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=5, what="the handoff to b")
    assert a.has("job_was_running=True")
    # Handed over once both runs were recorded, not before.
    assert read_lease(r, prefix).acquired_at >= max(run["recorded_at"] for run in runs.values()) * 1000 - 5


def test_a_following_web_dyno_runs_one_worker_and_starts_the_others_when_elected(web, shared_redis, prefix):
    """The embedded pool's extra workers run only while the site leads: a
    follower holds one worker's connections whatever the concurrency."""
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix, schedule="tests.support.schedule_empty",
            extra_env={"BATON_WORKER_CONCURRENCY": "3", "WEB_CONCURRENCY": "1"})
    wait_until(lambda: leads_ready(r, prefix, "a") and a.count("event=worker_start") == 3, timeout=20,
               what="a to lead with three workers")
    b = web("b", shared_redis.url, prefix, schedule="tests.support.schedule_empty",
            extra_env={"BATON_WORKER_CONCURRENCY": "3", "WEB_CONCURRENCY": "1"})
    wait_until(lambda: b.count("event=worker_waiting_for_lease") == 1, timeout=20, what="b's one worker to wait")
    time.sleep(1)
    assert len(spawned(b)) == 1
    assert len([c for c in r.client_list() if c["name"] in ("baton:b:worker", "baton:b:worker-feed")]) == 2
    assert a.get("/lease/release", method="POST")[0] == 200  # b is elected
    wait_until(lambda: b.count("event=worker_start") == 3, timeout=20, what="b's other two workers")
    assert leader_site(r, prefix) == "b" and len(spawned(b)) == 3
    wait_until(lambda: a.count("event=worker_retired") == 2, timeout=10, what="a's extra workers to stop")
    wait_until(lambda: len([p for p in spawned(a) if alive(p)]) == 1, timeout=10, what="a to keep one worker")
    assert a.count("event=worker_died") == 0


def test_a_worker_dyno_runs_that_many_workers_restarts_them_and_stops_them_all(shared_redis, prefix):
    """`python -m workers worker` (the Procfile's worker) with a concurrency
    of 2: a supervisor of two workers, as the web dyno's master is."""
    r = shared_redis.client()
    site = Site("w", shared_redis.url, prefix, "tests.support.schedule_empty",
                extra_env={"BATON_WORKER_CONCURRENCY": "2"})
    try:
        dyno = site.worker
        wait_until(lambda: leader_site(r, prefix) == "w" and dyno.count("event=worker_start") == 2, timeout=20,
                   what="the worker dyno's two workers")
        assert dyno.has("event=worker_pool_start site=w processes=2")
        first = spawned(dyno)
        assert sorted(dyno.pids()) == sorted([dyno.proc.pid, *first])
        os.kill(first[0], signal.SIGKILL)  # one worker dies: only it is restarted
        wait_until(lambda: len(spawned(dyno)) == 3, timeout=10, what="the dead worker's successor")
        assert dyno.count("event=worker_died") == 1 and alive(first[1])
        wait_until(lambda: dyno.count("event=worker_start") == 3, timeout=10, what="the successor to start")
        raw = shared_redis.client(decode_responses=False)
        for entry in ("j1", "j2"):
            enqueue_tick(raw, prefix, entry, kwargs={"sleep": 2})
        wait_until(lambda: dyno.count("event=job_start") == 2, timeout=10, what="both jobs to run at once")

        report = dyno.stop()

        assert report.clean, report
        assert not dyno.pids()
        runs = last_runs(r, prefix)
        assert runs["j1"]["outcome"] == runs["j2"]["outcome"] == "succeeded", runs
        assert {run["worker_pid"] for run in recorded_runs(r, prefix)} == set(spawned(dyno)[1:])
        assert dyno.has("event=worker_pool_exit site=w restarts=1")
    finally:
        site.close()


def test_the_workers_of_a_killed_worker_dyno_supervisor_die_with_it(shared_redis, prefix):
    r = shared_redis.client()
    site = Site("k", shared_redis.url, prefix, "tests.support.schedule_empty", scheduler=False,
                extra_env={"BATON_WORKER_CONCURRENCY": "3"})
    try:
        # No site leads: each worker waits (its stop signals installed).
        wait_until(lambda: site.worker.count("event=worker_waiting_for_lease") == 3, timeout=20,
                   what="three waiting workers")
        site.worker.kill_master()  # kill -9 of the supervisor alone
        wait_until(lambda: not site.worker.pids(), timeout=10, what="its workers to exit with it")
        assert site.worker.count("event=master_gone") == 3
        wait_until(lambda: not [c for c in r.client_list() if c["name"].startswith("baton:k:")], timeout=5,
                   what="their connections to close")
    finally:
        site.close()


# -- configuration ------------------------------------------------------------

BASE = {"REDIS_URL": "redis://127.0.0.1:6379/0", "BATON_SITE": "a"}


@pytest.mark.parametrize("raw, expected", [(None, DEFAULT_WORKER_CONCURRENCY), ("", DEFAULT_WORKER_CONCURRENCY),
                                           ("1", 1), (" 4 ", 4), ("16", 16)])
def test_the_concurrency_is_read_from_the_environment(raw, expected):
    env = dict(BASE) if raw is None else {**BASE, "BATON_WORKER_CONCURRENCY": raw}
    assert Settings.from_env(env).worker_concurrency == expected


@pytest.mark.parametrize("raw", ["0", "17", "-1", "2.5", "two", "1e1"])
def test_a_bad_concurrency_is_one_line_naming_the_variable_and_the_form(raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "BATON_WORKER_CONCURRENCY": raw})
    assert str(caught.value) == (f"BATON_WORKER_CONCURRENCY must be the number of jobs one site runs at once, "
                                 f"a whole number from 1 to 16; got {raw!r}")


@pytest.mark.parametrize("argv", [["-m", "workers", "worker"], ["-m", "workers", "check"], ["-m", "app", "check"]])
def test_a_bad_concurrency_stops_every_command_with_exit_2(shared_redis, argv):
    env = {**os.environ, "REDIS_URL": shared_redis.url, "BATON_SITE": "a", "BATON_WORKER_CONCURRENCY": "lots"}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "BATON_WORKER_CONCURRENCY must be" in lines[0] and "'lots'" in lines[0], done.stderr
