"""Jobs the tests schedule: each run is appended to a Redis list the test reads."""

import json
import os
import time

from workers.context import current_run


def record_tick(sleep: float = 0.0) -> str:
    run = current_run()
    started = time.time()
    if sleep:
        time.sleep(sleep)
    run.connection.rpush(
        f"{run.prefix}:test:executions",
        json.dumps({"entry": run.entry, "tick": run.tick, "site": run.site, "token": run.token,
                    "started": started, "pid": os.getpid()}),
    )
    return "ok"
