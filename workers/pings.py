"""Pings to a monitor people already use (Healthchecks.io style), per entry.

An entry with ``ping_url`` is pinged by the RQ worker process that runs its
tick: ``<ping_url>/start`` when the run starts, ``<ping_url>`` when it
succeeds, ``<ping_url>/fail`` when it fails (Healthchecks.io's protocol;
Cronitor's and others' accept the same shape through their Healthchecks
compatibility, or a URL of their own per state). Ticks that do not run send
nothing: the monitor's own schedule notices the missing ping, which is the
point of such a monitor.

Sent from a thread of the worker process (a queue of at most ``QUEUE_MAX``),
with a short timeout and one retry: never from the job, never blocking it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request

from election.logfmt import log_event

log = logging.getLogger("baton.pings")

PING_TIMEOUT_S = 5.0
PING_ATTEMPTS = 2
QUEUE_MAX = 100


def ping_target(base: str, state: str) -> str:
    """start | success | fail -> the URL to request."""
    base = base.rstrip("/")
    return base if state == "success" else f"{base}/{state}"


class Pinger:
    def __init__(self, site: str = ""):
        self.site = site
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self._thread = None

    def ping(self, base: str, state: str, entry: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="baton-pings", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((ping_target(base, state), state, entry))
        except queue.Full:
            log_event(log, logging.WARNING, "ping_dropped", site=self.site, entry=entry, state=state,
                      reason=f"{QUEUE_MAX} pings waiting")

    def _run(self) -> None:
        while True:
            url, state, entry = self._queue.get()
            for attempt in range(1, PING_ATTEMPTS + 1):
                try:
                    with urllib.request.urlopen(urllib.request.Request(url, method="GET"),
                                                timeout=PING_TIMEOUT_S) as response:
                        response.read()
                    break
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    if attempt == PING_ATTEMPTS:
                        log_event(log, logging.WARNING, "ping_failed", site=self.site, entry=entry, state=state,
                                  error=f"{type(exc).__name__}: {exc}")
                    else:
                        time.sleep(1.0)
