"""Jobs the tests schedule: each run is appended to a Redis list the test reads."""

import json
import os
import time

from workers.context import current_run


def executions_key(prefix: str) -> str:
    return f"{prefix}:test:executions"


def recorded_runs(connection, prefix: str) -> list:
    """Every run record_tick wrote, oldest first."""
    return [json.loads(x) for x in connection.lrange(executions_key(prefix), 0, -1)]


def record_tick(sleep: float = 0.0) -> str:
    run = current_run()
    started = time.time()
    if sleep:
        time.sleep(sleep)
    run.connection.rpush(
        executions_key(run.prefix),
        json.dumps({"entry": run.entry, "tick": run.tick, "site": run.site, "token": run.token,
                    "started": started, "pid": os.getpid()}),
    )
    return "ok"
