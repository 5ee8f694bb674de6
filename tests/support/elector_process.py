"""An elector in a process of its own, for tests that SIGKILL or SIGSTOP it.

Prints one JSON line per event on stdout:
  {"event": "elected", "token": 3, "mono": ..., "wall": ...}
Usage: python -m tests.support.elector_process URL PREFIX SITE TTL INTERVAL DEADLINE
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from election import Callbacks, ElectionConfig, Elector, Identity, Lease


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, "mono": time.monotonic(), "wall": time.time(), **fields}), flush=True)


def main(argv) -> int:
    url, prefix, site, ttl, interval, deadline = argv[:6]
    config = ElectionConfig(ttl=float(ttl), renew_interval=float(interval), renew_deadline=float(deadline))
    lease = Lease.from_url(url, Identity(site=site, dyno="web.1"), config.ttl_ms, prefix=prefix)
    elector = Elector(
        lease,
        config,
        Callbacks(
            on_elected=lambda token: emit("elected", token=token),
            on_demoted=lambda reason: emit("demoted", reason=reason),
        ),
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    elector.start()
    emit("started")
    done.wait()
    elector.stop()
    emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
