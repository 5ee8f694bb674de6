"""Timings of the election, validated once, up front.

The three lease timings follow client-go's leaderelection (LeaseDuration,
RenewDeadline, RetryPeriod) and must satisfy ``0 < renew_interval <
renew_deadline < ttl``:

- the leader renews every ``renew_interval``;
- it stops believing it leads once ``renew_deadline`` has passed since the last
  renewal that succeeded was *sent*, measured on its own monotonic clock;
- the lease in Redis lives ``ttl`` after the server applied that renewal, which
  is no earlier than it was sent.

So a leader always gives up (locally) ``ttl - renew_deadline`` before anyone
else can take the lease, as long as the two clocks advance at nearly the same
rate (bounded drift) — that margin is what absorbs drift.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ElectionConfig:
    # How long a lease lives in Redis without renewal. It is the failover time
    # when a leader dies silently (SIGKILL, dyno crash): nobody may take the
    # lease before it runs out. 10 s keeps failover short while leaving room
    # for several renewals to fail first.
    ttl: float = 10.0

    # How often the leader renews. 2 s gives 3 tries before the deadline, so one
    # slow or failed round trip (a reconnect after Heroku closes an idle
    # connection, a GC pause) never costs leadership, at 0.5 Redis commands/s.
    renew_interval: float = 2.0

    # The self-fencing deadline: with no successful renewal for this long, the
    # leader steps down locally. 7 s leaves 3 s (30 % of the ttl) between a
    # leader giving up and the lease becoming free, which covers clock-rate
    # drift and the last renewal's time in flight many times over.
    renew_deadline: float = 7.0

    # Jittered exponential backoff after a Redis error (connection refused,
    # timeout). Starts small so a single dropped connection costs milliseconds;
    # capped so that a Redis coming back is noticed within ~2 s.
    retry_backoff_min: float = 0.05
    retry_backoff_max: float = 2.0

    # Redis checks blocked clients' timeouts in its event loop, which wakes
    # every 1/hz s (100 ms at the default hz 10): a BLPOP can return up to
    # ~130 ms after its timeout. A follower therefore blocks only until this
    # long before the lease's expiry and sleeps out the rest on its own clock,
    # so takeover does not wait for the server's timer.
    server_timer_slack: float = 0.25

    # A leader that steps down on request (POST /lease/release) stays out of
    # the race this long, so that another site — woken by the release — takes
    # over instead of the same one winning again at once.
    step_down_hold_off: float = 2.0

    # Connect and plain-command timeout. Renewals use a tighter one: whatever
    # time is left before the renew deadline.
    socket_timeout: float = 2.0

    # A candidate whose site is not ready (a lease with require_ready:
    # election/readiness.py) is not noted as waiting, so no release wakes it;
    # it asks again this often — one ACQUIRE per second, only while its site
    # cannot work — and takes a free lease when no ready site waits for it.
    not_ready_poll: float = 1.0

    # Entries kept in the ``{prefix}:history`` stream (approximate trimming).
    history_maxlen: int = 1000

    # After a Redis failover (elector._on_primary_changed) no term starts for
    # this long. None: the ttl. A leader cut off from the old primary believes
    # it leads for at most renew_deadline after its last renewal, which came
    # before the failover was seen; the ttl adds the same margin for clock
    # drift the lease itself keeps, and makes a failover cost what a leader's
    # crash costs.
    failover_quarantine: "float | None" = None  # None becomes the ttl

    def __post_init__(self) -> None:
        for name in (
            "ttl",
            "renew_interval",
            "renew_deadline",
            "retry_backoff_min",
            "retry_backoff_max",
            "socket_timeout",
            "not_ready_poll",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if not self.renew_interval < self.renew_deadline:
            raise ValueError(
                f"renew_interval ({self.renew_interval}) must be shorter than "
                f"renew_deadline ({self.renew_deadline})"
            )
        if not self.renew_deadline < self.ttl:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}) must be shorter than ttl ({self.ttl}), "
                "so a leader steps down before its lease can expire"
            )
        if self.retry_backoff_min > self.retry_backoff_max:
            raise ValueError("retry_backoff_min must not exceed retry_backoff_max")
        if not 0 <= self.server_timer_slack < self.ttl:
            raise ValueError("server_timer_slack must be >= 0 and shorter than ttl")
        if self.step_down_hold_off < 0:
            raise ValueError("step_down_hold_off must be >= 0")
        if self.failover_quarantine is None:
            object.__setattr__(self, "failover_quarantine", self.ttl)  # frozen: set once, here
        if not (
                isinstance(self.failover_quarantine, (int, float)) and self.failover_quarantine >= self.renew_deadline):
            raise ValueError(
                f"failover_quarantine ({self.failover_quarantine}) must be at least renew_deadline "
                f"({self.renew_deadline}): a leader cut off by the failover may believe it leads that long"
            )
        if not isinstance(self.history_maxlen, int) or self.history_maxlen < 1:
            raise ValueError("history_maxlen must be a whole number >= 1")

    @property
    def follower_wait_max(self) -> float:
        """The longest a follower blocks in one wait for a release.

        The wait carries an ACQUIRE behind it (``Lease.wait_then_acquire``),
        which the server may run at any moment of the wait; a term it starts
        can only be counted from the wait's start — the last instant known to
        be earlier. Capping the wait at ``renew_deadline - renew_interval``
        leaves such a term at least ``renew_interval`` to renew in (it renews
        at once). The price: an idle follower sends its two commands (BLPOP,
        ACQUIRE) once per cap instead of once per ttl: 0.4/s at the defaults.
        """
        return self.renew_deadline - self.renew_interval

    @property
    def ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))
