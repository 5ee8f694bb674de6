"""How a stopping Baton process spends the 30 s a platform gives it.

Heroku sends SIGTERM to every process of a dyno (the gunicorn master, its
HTTP workers, the RQ worker and its work horse), possibly more than once, and
SIGKILL to all of them 30 s later; ``docker compose stop`` does the same to
PID 1 (``stop_grace_period`` in docker-compose.yml is set to the same 30 s).
Within that, in order, every step bounded by a deadline counted from the
first SIGTERM — never by "as long as it takes", so a frozen Redis cannot push
the exit past the SIGKILL:

1. a running job may finish, for up to ``BATON_SHUTDOWN_GRACE``;
2. then it is interrupted (``JobInterrupted`` raised inside it) and gets
   ``INTERRUPT_WAIT_S`` to unwind and record its run; then its work horse is
   SIGKILLed;
3. the RQ worker does its bookkeeping and exits: ``WORKER_EXIT_S``;
4. the master releases the lease: ``RELEASE_S`` (one Redis round trip, or
   one socket timeout when Redis is frozen);
5. gunicorn stops its HTTP workers: ``HTTP_STOP_S`` (its graceful_timeout);
6. ``SAFETY_MARGIN_S`` is left before the platform's SIGKILL.

With no job running, the release comes first and takes milliseconds.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

# Heroku: SIGKILL this long after SIGTERM. docker-compose.yml gives the same.
PLATFORM_KILL_AFTER_S = 30.0

# An interrupted job's time to unwind: its finally blocks, and the run record.
INTERRUPT_WAIT_S = 2.0

# RQ's bookkeeping after the work horse ended (a few Redis round trips), and
# the interpreter's exit.
WORKER_EXIT_S = 1.0

# The lease release: one round trip, or one socket timeout (2 s) if Redis is
# frozen; the followers then wait out the lease's TTL instead.
RELEASE_S = 2.0

# gunicorn's graceful_timeout: HTTP requests in flight when the master stops.
# An operator request's Redis calls time out after 2 s.
HTTP_STOP_S = 3.0

# Left unused before the platform's SIGKILL: scheduling noise on a busy host.
SAFETY_MARGIN_S = 2.0

# A process that is only winding down (an HTTP worker done serving, an RQ
# worker stopped with no job running) lowers its priority by this much: the
# master's release of the lease is what the other site waits for, and a dyno
# stop wakes every process of the dyno at once. Measured on two cores: the
# handoff's median nearly halved (7.1 -> 4.1 ms over 40 dyno stops).
WINDING_DOWN_NICENESS = 10

# The longest BATON_SHUTDOWN_GRACE that still fits every step above (20 s).
MAX_GRACE_S = (PLATFORM_KILL_AFTER_S - SAFETY_MARGIN_S - HTTP_STOP_S - RELEASE_S - WORKER_EXIT_S
               - INTERRUPT_WAIT_S)


@dataclass(frozen=True)
class StopPlan:
    """The deadlines of one stop, on the monotonic clock, from its first signal."""

    grace: float  # how long a running job may still take
    started: float = field(default_factory=time.monotonic)

    @property
    def interrupt_at(self) -> float:
        """A job still running now is interrupted."""
        return self.started + self.grace

    @property
    def kill_job_at(self) -> float:
        """An interrupted job still running now is SIGKILLed."""
        return self.interrupt_at + INTERRUPT_WAIT_S

    @property
    def worker_gone_by(self) -> float:
        """The RQ worker has exited; the master SIGKILLs it otherwise."""
        return self.kill_job_at + WORKER_EXIT_S

    @property
    def exit_by(self) -> float:
        """Every process has exited: the platform's SIGKILL, less the margin."""
        return self.started + PLATFORM_KILL_AFTER_S - SAFETY_MARGIN_S

    @staticmethod
    def left(deadline: float) -> float:
        """Seconds until ``deadline`` (0 once it has passed)."""
        return max(0.0, deadline - time.monotonic())


def exit_without_stop_signals() -> None:
    """Called once a process has finished its stop and only has to exit.

    Early in interpreter shutdown (before modules are torn down, which takes
    up to half a second on a busy dyno) Python gives every signal with a
    Python handler its default action back, so a repeated SIGTERM then — a
    dyno stop may send several — kills a process that had finished cleanly,
    with -15 instead of 0 (seen: the gunicorn master, 0.52 s after the first
    SIGTERM, 0.02 s after the second). An ignored signal stays ignored."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
