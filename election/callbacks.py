"""Leadership callbacks, run off the election loop.

The callbacks are user code. Running them on their own thread means a slow
one never delays a renewal (which would cost the lease), and one that raises
is logged and forgotten — the election goes on. They run one at a time, in the
order the events happened.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from .logfmt import log_event
from .record import LeaseRecord

log = logging.getLogger("baton.election")


def _ignore(*_args) -> None:
    return None


@dataclass(frozen=True)
class Callbacks:
    # Called with the fencing token when this candidate becomes leader.
    on_elected: Callable[[int], None] = _ignore
    # Called with a reason ('stopped', 'renew_deadline_missed', 'lease_lost',
    # 'step_down') when it stops being leader — always before the lease can
    # pass to anyone else in Redis, except when the loop itself was frozen.
    on_demoted: Callable[[str], None] = _ignore
    # Called with the new LeaseRecord (or None when the lease is free) when
    # the observed holder or token changes.
    on_leader_changed: Callable[[Optional[LeaseRecord]], None] = _ignore
    # With a lease that requires readiness (election/readiness.py): called
    # with (ready, ready_elsewhere) when either changes — whether this site
    # can work, and whether a ready site of another waits for the lease.
    on_readiness_changed: Callable[[bool, bool], None] = _ignore


class CallbackRunner:
    """A single worker thread draining a FIFO of callback calls."""

    def __init__(self, name: str):
        self._queue: "queue.Queue" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def submit(self, name: str, fn: Callable, *args) -> None:
        self._queue.put((name, fn, args))

    def close(self, timeout: float) -> None:
        """Run what is queued (up to ``timeout`` s), then end the thread."""
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)

    def drain(self, timeout: float) -> bool:
        """Wait until every callback submitted so far has run."""
        done = threading.Event()
        self._queue.put(("drain", done.set, ()))
        return done.wait(timeout) if self._started else True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, fn, args = item
            try:
                fn(*args)
            except Exception as exc:  # user code: log it, keep going
                log_event(
                    log, logging.ERROR, "callback_failed", callback=name,
                    error=f"{type(exc).__name__}: {exc}",
                )
