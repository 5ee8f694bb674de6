"""Keeps an Eco dyno awake: it sleeps after 30 min without router traffic."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request

from election.logfmt import log_event

log = logging.getLogger("baton.web")


class KeepAwake(threading.Thread):
    """Requests the site's own public URL every interval so an Eco dyno sees
    router traffic and does not sleep. Failures are logged, never fatal."""

    def __init__(self, url: str, interval: float, site: str, stopping: threading.Event):
        super().__init__(name="baton-keep-awake", daemon=True)
        self.url, self.interval, self.site, self.stopping = url, interval, site, stopping
        self.hits = 0

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    status = response.status
                self.hits += 1
                log_event(log, logging.INFO, "keep_awake", site=self.site, status=status,
                          ms=round((time.monotonic() - started) * 1000))
            except Exception as exc:
                log_event(log, logging.WARNING, "keep_awake_failed", site=self.site,
                          error=f"{type(exc).__name__}: {exc}")
