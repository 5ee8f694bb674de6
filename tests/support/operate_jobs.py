"""Jobs for the tests of an operator's controls and the overlap, retry and
lost-lease policies (tests/test_operate.py). Each leaves evidence that does
not depend on the job's Redis: runs in a Redis list (times of start and end),
or, for jobs cut off from Redis, lines in a file."""

from __future__ import annotations

import json
import os
import socket
import time

from tests.support.jobs import json_list
from workers.context import current_run


def spans_key(prefix: str) -> str:
    return f"{prefix}:test:spans"


def spans(connection, prefix: str) -> list:
    """Every run timed_run and fails_twice wrote, oldest first."""
    return json_list(connection, spans_key(prefix))


def timed_run(seconds: float = 0.0) -> str:
    """Sleeps, then records when it started and ended."""
    run = current_run()
    started = time.time()
    time.sleep(seconds)
    run.connection.rpush(spans_key(run.prefix), json.dumps(
        {"entry": run.entry, "tick": run.tick, "site": run.site, "token": run.token, "started": started,
         "ended": time.time()}))
    return "ok"


def fails_twice() -> str:
    """Fails on the first two attempts of each tick, then succeeds."""
    run = current_run()
    attempts = run.connection.incr(f"{run.prefix}:test:attempts:{run.entry}:{run.tick}")
    run.connection.rpush(spans_key(run.prefix), json.dumps({"entry": run.entry, "tick": run.tick,
                                                             "attempt": attempts, "at": time.time()}))
    if attempts <= 2:
        raise ValueError(f"attempt {attempts} fails")
    return "ok"


def blocks() -> None:
    """Blocks for a minute in time.sleep or in a socket read (BATON_TEST_BLOCK
    = sleep | socket; the socket's server at BATON_TEST_SILENT_PORT never
    answers), writing to BATON_TEST_MARKS when it starts and how it ended."""
    path = os.environ["BATON_TEST_MARKS"]
    run = current_run()

    def mark(**fields):
        with open(path, "a") as f:
            f.write(json.dumps({"at": time.time(), "token": run.token, **fields}) + "\n")

    mark(event="started")
    try:
        if os.environ.get("BATON_TEST_BLOCK") == "socket":
            with socket.create_connection(("127.0.0.1", int(os.environ["BATON_TEST_SILENT_PORT"]))) as sock:
                sock.recv(1)
        else:
            time.sleep(60)
        mark(event="ended", how="returned")
    except BaseException as exc:
        mark(event="ended", how=type(exc).__name__)
        raise
