"""Jobs the tests schedule: each run is appended to a Redis list the test reads."""

import json
import os
import time

from workers.context import current_run


def executions_key(prefix: str) -> str:
    return f"{prefix}:test:executions"


def json_list(connection, key: str) -> list:
    """The JSON documents of a Redis list, oldest first."""
    return [json.loads(x) for x in connection.lrange(key, 0, -1)]


def recorded_runs(connection, prefix: str) -> list:
    """Every run record_tick wrote, oldest first."""
    return json_list(connection, executions_key(prefix))


def record_tick(sleep: float = 0.0) -> str:
    run = current_run()
    started = time.time()
    if sleep:
        time.sleep(sleep)
    run.connection.rpush(
        executions_key(run.prefix),
        json.dumps({"entry": run.entry, "tick": run.tick, "site": run.site, "token": run.token,
                    "started": started, "pid": os.getpid(), "worker_pid": os.getppid()}),
    )
    return "ok"


def record_tick_to_file() -> str:
    """record_tick, to the file named by BATON_TEST_RUN_FILE (one JSON line
    per run, appended): for tests in which Redis itself may lose writes."""
    run = current_run()
    line = json.dumps({"entry": run.entry, "tick": run.tick, "site": run.site, "token": run.token,
                       "started": time.time(), "mono": time.monotonic(), "pid": os.getpid()}) + "\n"
    fd = os.open(os.environ["BATON_TEST_RUN_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)
    return "ok"


def runs_in_file(path) -> list:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def stubborn(seconds: float) -> str:
    """A job that will not be interrupted: it swallows JobInterrupted (a
    BaseException, like a bare ``except:`` would) and sleeps on."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(max(0.0, deadline - time.monotonic()))
        except BaseException:  # noqa: B036 — the point of this job
            continue
    return "done"


def enqueue_tick(connection, prefix: str, entry: str, func: str = "tests.support.jobs:record_tick", kwargs=None,
                 grace: float = 60.0, on_interrupt: str = "drop", timeout: int = 120) -> str:
    """A tick job as the scheduler enqueues it (workers/scheduler.py), due now,
    on the deployment's default queue. ``connection`` without decode_responses."""
    from rq import Queue

    from workers.entries import rq_queue_name
    from workers.runner import run_tick

    tick = time.time()
    job_id = f"{prefix}-{entry}-{int(tick * 1000)}"
    Queue(rq_queue_name(prefix, "baton"), connection=connection).enqueue_call(
        run_tick, args=(entry, tick, job_id, func, (), dict(kwargs or {}), grace, "finish", prefix),
        job_id=job_id, timeout=timeout,
        meta={"baton_entry": entry, "baton_tick": tick, "baton_on_interrupt": on_interrupt},
    )
    return job_id


def always_fails() -> None:
    raise RuntimeError("this job always fails")


def sleeps(seconds: float) -> str:
    """Sleeps and allocates nothing: a running job that costs only its work
    horse (bench/concurrency_bench.py)."""
    time.sleep(seconds)
    return "slept"
