"""The election loop: compete for the lease, hold it, give it up.

One thread per elector runs every Redis call over the lease's single
connection; callbacks run on a second thread (see callbacks.py).

Follower: ACQUIRE (one round trip that also reads the current lease). If
someone holds it, BLPOP the release signal with the next ACQUIRE pipelined
behind it, until shortly before the lease's expiry (computed from its PTTL,
not a poll tick) or for at most ``follower_wait_max``; then sleep out the rest
on the local clock and try again. A graceful release wakes it at once, and it
wakes already holding the lease; a silent death is noticed as the lease runs
out.

Readiness (a lease made with ``require_ready``: readiness.py): a candidate
whose site cannot work polls every ``not_ready_poll`` instead of waiting for
a release, and takes a free lease only when no ready site waits; a leader
whose site stops being ready hands the lease over (release, then the
step-down hold-off) at its next renewal once a ready site waits, and keeps
it, saying so, while none does.

Leader: RENEW every ``renew_interval``. ``is_leader`` is true only while the
last successful renewal was *sent* less than ``renew_deadline`` ago, so a
leader that cannot reach Redis (or is stuck) stops believing it leads before
the lease can expire and pass to someone else — self-fencing, on the local
monotonic clock. Every Redis call a leader makes is bounded by the time left
to that deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .backoff import Backoff
from .callbacks import CallbackRunner, Callbacks
from .config import ElectionConfig
from .errors import LeaseCorrupt
from .lease import STEP_DOWN, Acquired, Lease, NotReady, Quarantined
from .logfmt import log_event
from .outage import OutageLog
from .primary import PrimaryChanged
from .record import LeaseRecord

log = logging.getLogger("baton.election")

# How long a demotion (stop(), a step-down, a missed deadline) gives the
# on_demoted callback to run before the lease is released: local work should
# stop before another site may start it, but a hung callback must not keep
# the lease from being handed over.
DEMOTED_CALLBACK_GRACE = 1.0

# A renewal this much later than its interval is logged as renewed_late: it
# means Redis was slow or unreachable for a while and the leader came close
# to stepping down.
LATE_RENEWAL_FACTOR = 1.5

# The shortest wait a follower sends to Redis. Redis ends a blocked client's
# wait only when its event loop wakes (at the latest every 1/hz, 100 ms), so
# a shorter BLPOP cannot come back sooner than sleeping would; and Redis
# before 7.0.8 reads "0.001" as 0, i.e. block forever. Below this, the
# follower sleeps out the lease on its own clock instead.
MIN_SERVER_WAIT = 0.01

# A leader whose site is not ready, with no ready site waiting to take over,
# keeps leading (a schedule that runs late beats none) and says so again this
# often while it lasts.
NOT_READY_REPEAT_S = 60.0

# A site that has not been ready yet since this elector started (its workers
# are still booting: a second or two) is said to be not ready at info level,
# and warned about only if that lasts this long.
NOT_READY_AT_BOOT_S = 10.0

# After a failover the fence counter may have gone back: the replica that was
# promoted missed the writes of the last moments before it, acquisitions
# (INCRs of the fence) among them. The first terms after it therefore start
# this far above the highest token the site has seen. A failover loses at
# most the replication lag's worth of writes (Sentinel promotes the freshest
# replica, and none whose link was down for long), and terms start at most a
# few times a second even in a flapping deployment: 1000 leaves a margin of
# orders of magnitude, at the cost of a visible jump in the tokens.
FAILOVER_TOKEN_STEP = 1000


@dataclass(frozen=True)
class Term:
    """One stretch of leadership. Times are on this process's monotonic clock."""

    token: int
    started_at: float
    valid_until: float  # last successful renewal sent + renew_deadline


class Elector:
    """Competes for ``lease`` and tells its callbacks what happens.

    Guarantees, given a single Redis primary and clocks whose rates drift
    apart by much less than ``(ttl - renew_deadline) / ttl``:

    - ``is_leader`` is true in at most one elector of a deployment at a time;
    - each term has a fencing token larger than every earlier term's;
    - ``on_demoted`` has run (or had ``DEMOTED_CALLBACK_GRACE`` to run)
      before this elector releases the lease, and is queued before the lease
      can expire under it.
    It does *not* guarantee that work started by a leader stops in time if the
    whole process is frozen — use the fencing token for writes that matter.
    """

    def __init__(
        self,
        lease: Lease,
        config: ElectionConfig = ElectionConfig(),
        callbacks: Callbacks = Callbacks(),
        clock=time.monotonic,
    ):
        if lease.ttl_ms != config.ttl_ms:
            raise ValueError(f"lease ttl ({lease.ttl_ms} ms) differs from config.ttl ({config.ttl_ms} ms)")
        self._lease = lease
        self._config = config
        self._callbacks = callbacks
        self._clock = clock
        self._site = lease.identity.site
        self._runner = CallbackRunner(name=f"baton-callbacks-{self._site}")
        self._thread = threading.Thread(target=self._run, name=f"baton-elector-{self._site}", daemon=True)
        self._backoff = Backoff(config.retry_backoff_min, config.retry_backoff_max)
        self._outage = OutageLog(log, self._site, "elector")

        self._lock = threading.Lock()
        self._term: Optional[Term] = None
        self._leader: Optional[LeaseRecord] = None
        self._highest_token = 0
        self._next_renew_at = 0.0
        self._hold_off_until = 0.0
        self._pending_step_down: Optional[tuple] = None  # (token, reason) to record in Redis
        self._blocked_in_wait = False
        self._wait_cut = False  # stop() cut a wait, and the ACQUIRE behind it
        self._last_corrupt_report: dict = {}
        self._quarantine_reported = False
        self._redis_ok: Optional[bool] = None
        self._ready: Optional[bool] = None  # None: not known yet, or readiness not required
        self._ready_elsewhere = False
        self._not_ready_said_at: Optional[float] = None
        self._ever_ready = False  # ready at least once since start
        # Monotonic counters for /metrics; each written by the loop thread only.
        self.counters = {"elected": 0, "demoted": 0, "renewals": 0, "renew_failures": 0,
                         "released": 0, "redis_errors": 0, "primary_changes": 0}

        self._started = False
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._step_down_lock = threading.Lock()
        self._step_down_requested = threading.Event()
        self._step_down_done = threading.Event()
        self._step_down_result = False

    # -- public surface ----------------------------------------------------

    def start(self) -> "Elector":
        if not self._started:
            self._started = True
            self._runner.start()
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop competing; if leading, demote locally, then release the lease
        (compare-and-delete) and wake a waiting candidate. Idempotent, safe
        from any thread or a signal-driven shutdown hook."""
        self._stopping.set()
        self._wake.set()
        deadline = self._clock() + timeout
        # A follower may be blocked in BLPOP for up to the lease's ttl; cut it.
        while self._thread.is_alive() and self._clock() < deadline:
            with self._lock:
                if self._blocked_in_wait:
                    self._lease.interrupt()
                    self._wait_cut = True
            self._thread.join(0.05)
        self._runner.close(max(0.0, deadline - self._clock()))

    def step_down(self, timeout: float = 5.0) -> bool:
        """Give up leadership now (release + wake the others) and stay out of
        the race for ``step_down_hold_off``. Returns False if not leader."""
        with self._step_down_lock:
            if not self.is_leader:
                return False
            self._step_down_done.clear()
            self._step_down_requested.set()
            self._wake.set()
            if not self._step_down_done.wait(timeout):
                return False
            return self._step_down_result

    @property
    def is_leader(self) -> bool:
        term = self._term
        return term is not None and self._clock() < term.valid_until

    @property
    def token(self) -> Optional[int]:
        """The fencing token of the current term, None when not leading."""
        term = self._term
        return term.token if term is not None and self._clock() < term.valid_until else None

    def term(self) -> Optional[Term]:
        """The current term if leading (a consistent snapshot), else None."""
        term = self._term
        return term if term is not None and self._clock() < term.valid_until else None

    @property
    def leader(self) -> Optional[LeaseRecord]:
        """The lease as this elector last saw it (its own while it leads)."""
        return self._leader

    @property
    def redis_ok(self) -> Optional[bool]:
        """Whether the elector's last Redis call succeeded (None before the first)."""
        return self._redis_ok

    @property
    def ready(self) -> Optional[bool]:
        """Whether this site was ready at the last ACQUIRE or RENEW (None
        before one, and always None when the lease does not require it)."""
        return self._ready

    @property
    def ready_elsewhere(self) -> bool:
        """While this site is not ready: whether a ready site waited for the
        lease at the last look."""
        return self._ready_elsewhere

    @property
    def redis_full(self) -> bool:
        """True while Redis refuses this elector's writes for want of memory
        (a follower cannot start a term; a leader's renewal needs none)."""
        return self._outage.full

    @property
    def lease(self) -> Lease:
        return self._lease

    @property
    def config(self) -> ElectionConfig:
        return self._config

    # -- loop --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._record_pending_step_down()
                    if self._term is not None:
                        self._lead_once()
                    else:
                        self._follow_once()
                except PrimaryChanged as exc:
                    self._on_primary_changed(exc)
                except LeaseCorrupt as exc:
                    self._report_corrupt(exc)
                    # Junk that expires is waited out; junk without a TTL is
                    # looked at again once per ttl until someone removes it.
                    wait = exc.pttl_ms / 1000 if exc.pttl_ms >= 0 else self._config.ttl
                    self._sleep(min(max(wait, 0.001), self._config.ttl))
                except RedisError as exc:
                    self._on_redis_error(exc)
                except Exception as exc:  # a bug must not end the election
                    log.exception("unexpected error in election loop")
                    log_event(log, logging.ERROR, "elector_error", site=self._site, error=repr(exc))
                    self._sleep(self._backoff.next())
        finally:
            self._finish()

    def _sleep(self, seconds: float) -> bool:
        """Wait, cut short by stop() or step_down(). True if woken early."""
        woken = self._wake.wait(max(0.0, seconds))
        if woken and not self._stopping.is_set():
            self._wake.clear()
        return woken

    def _succeeded(self) -> None:
        self._redis_ok = True
        self._outage.succeeded()
        self._backoff.reset()

    # follower ------------------------------------------------------------

    def _follow_once(self) -> None:
        if self._step_down_requested.is_set():
            # Asked while the term was ending: nothing left to give up.
            self._step_down_requested.clear()
            self._step_down_result = False
            self._step_down_done.set()
        now = self._clock()
        if now < self._hold_off_until:
            self._sleep(self._hold_off_until - now)
            return
        sent = self._clock()
        result = self._lease.acquire(self._highest_token, timeout=self._config.socket_timeout)
        self._succeeded()
        signal_problem = None
        while not isinstance(result, Acquired):
            if isinstance(result, Quarantined):
                self._wait_out_quarantine(result)
                return
            if isinstance(result, NotReady):
                self._wait_while_not_ready(result)
                return
            self._note_readiness(True, False)
            self._quarantine_reported = False
            self._observe(result)
            # The lease runs out pttl after the server read it, which was after
            # `sent`: aiming at sent + pttl is early by at most a round trip, and
            # an early ACQUIRE just answers with the little time left.
            expires_at = sent + result.pttl_ms / 1000
            blocking_for = min(expires_at - self._clock() - self._config.server_timer_slack,
                               self._config.follower_wait_max)
            if signal_problem is not None:
                # Junk at the signal key: no release can wake us, but the
                # lease's expiry is still known — wait for it on our own clock.
                self._report_corrupt(signal_problem)
                blocking_for = 0
            if blocking_for < MIN_SERVER_WAIT:
                self._sleep(expires_at - self._clock())
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._blocked_in_wait = True
            # The ACQUIRE behind the wait runs after this instant, so a term
            # it starts is counted from here (see follower_wait_max).
            wait_started = self._clock()
            try:
                # No reply by the lease's expiry (a wait Redis never ends, a
                # lost reply): drop the connection there and ask again at
                # once, rather than wait out the socket margin.
                woken = self._lease.wait_then_acquire(blocking_for, self._highest_token,
                                                      reply_within=expires_at - self._clock())
            except RedisTimeoutError as exc:
                if self._stopping.is_set() or self._clock() < expires_at:
                    raise
                log_event(log, logging.WARNING, "wait_unanswered", site=self._site,
                          wait_ms=round(blocking_for * 1000), error=f"{type(exc).__name__}: {exc}")
                return  # the loop's next ACQUIRE reconnects; no backoff: the lease is due
            finally:
                with self._lock:
                    self._blocked_in_wait = False
            self._succeeded()
            result, signal_problem = woken.outcome, woken.signal_problem
            sent = wait_started
            if not isinstance(result, Acquired) and not woken.signalled and signal_problem is None:
                # The wait timed out, so the ACQUIRE that read the holder's
                # PTTL ran at least blocking_for after the wait began: counting
                # the lease's time left from the wait's start would aim the
                # next wait seconds early, and wake an idle follower for nothing.
                sent = wait_started + blocking_for
        self._become_leader(result, sent)

    def _wait_while_not_ready(self, not_ready: NotReady) -> None:
        """This site cannot work: look again after not_ready_poll (no
        release wakes it: it is not noted as waiting)."""
        if not_ready.record is not None:
            self._observe(not_ready.record)
        # A free lease left to a ready site says one waits; a lease held by
        # another says nothing new (kept, so handovers elsewhere do not flap
        # this site's log lines).
        self._note_readiness(False, not_ready.record is None or self._ready_elsewhere)
        self._sleep(self._config.not_ready_poll)

    def _note_readiness(self, ready: bool, ready_elsewhere: bool) -> None:
        """Log and call back on a change of this site's readiness; a leader
        that is not ready says so again every NOT_READY_REPEAT_S."""
        if not self._lease.require_ready:
            return
        changed = (ready, ready_elsewhere) != (self._ready, self._ready_elsewhere)
        was_ready, self._ready, self._ready_elsewhere = self._ready, ready, ready_elsewhere
        now = self._clock()
        leading = self._term is not None
        if ready:
            self._not_ready_said_at = None
            self._ever_ready = True
            if was_ready is False:
                log_event(log, logging.INFO, "site_ready", site=self._site, leader=leading)
        elif (changed or (leading and now - (self._not_ready_said_at or -1e9) >= NOT_READY_REPEAT_S)):
            # Not ready since start: its workers may still be booting. Said at
            # info now; a leader repeats it as a warning if it lasts.
            quiet = changed and not self._ever_ready
            self._not_ready_said_at = now - NOT_READY_REPEAT_S + NOT_READY_AT_BOOT_S if quiet else now
            if leading:
                action = "handing over" if ready_elsewhere else "leading anyway: no ready site waits"
            else:
                action = ("leaving the lease to a ready site" if ready_elsewhere
                          else "competing only if no ready site does")
            log_event(log, logging.INFO if quiet else logging.WARNING, "site_not_ready",
                      site=self._site, leader=leading, ready_elsewhere=ready_elsewhere, action=action)
        if changed:
            self._runner.submit("on_readiness_changed", self._callbacks.on_readiness_changed, ready, ready_elsewhere)

    def _wait_out_quarantine(self, quarantined: Quarantined) -> None:
        if not self._quarantine_reported:
            self._quarantine_reported = True
            log_event(log, logging.WARNING, "election_quarantined", site=self._site,
                      ms_left=quarantined.pttl_ms, detail=quarantined.detail)
        self._sleep(max(quarantined.pttl_ms / 1000, MIN_SERVER_WAIT))

    def _observe(self, record: Optional[LeaseRecord]) -> None:
        previous = self._leader
        self._leader = record
        if record is not None:
            self._highest_token = max(self._highest_token, record.token)
        changed = (previous is None) != (record is None) or (
            record is not None and (record.holder, record.token) != (previous.holder, previous.token)
        )
        if changed:
            if record is not None:
                log_event(
                    log, logging.INFO, "leader_changed", site=self._site,
                    leader=record.site, holder=record.holder, token=record.token,
                )
            self._runner.submit("on_leader_changed", self._callbacks.on_leader_changed, record)

    def _become_leader(self, acquired: Acquired, sent: float) -> None:
        self._highest_token = max(self._highest_token, acquired.token)
        if self._clock() >= sent + self._config.renew_deadline:
            # The reply took longer than a whole renew deadline (a frozen
            # process, a crawling Redis): the lease may have little time left,
            # so this was never a term. Give it back at once.
            log_event(log, logging.WARNING, "acquired_too_late", site=self._site, token=acquired.token)
            self._pending_step_down = (acquired.token, "acquired_too_late")
            return
        self.counters["elected"] += 1
        with self._lock:
            self._term = Term(acquired.token, self._clock(), sent + self._config.renew_deadline)
        self._next_renew_at = sent + self._config.renew_interval
        identity = self._lease.identity
        self._observe(
            LeaseRecord(
                holder=identity.holder, site=identity.site, token=acquired.token,
                acquired_at=acquired.acquired_at, renewed_at=acquired.acquired_at,
                ttl_ms=self._lease.ttl_ms, pttl_ms=self._lease.ttl_ms,
            )
        )
        log_event(
            log, logging.INFO, "elected", site=self._site, token=acquired.token,
            how=acquired.event, holder=identity.holder,
        )
        if acquired.history_error:
            self._report_corrupt(LeaseCorrupt(self._lease.keys.history, acquired.history_error))
        self._runner.submit("on_elected", self._callbacks.on_elected, acquired.token)
        self._note_readiness(acquired.ready, False)

    # leader --------------------------------------------------------------

    def _lead_once(self) -> None:
        if self._step_down_requested.is_set():
            self._handle_step_down()
            return
        term = self._term
        wait = self._next_renew_at - self._clock()
        if wait > 0 and self._sleep(wait):
            return  # stop or step-down: the loop decides what next
        sent = self._clock()
        if sent >= term.valid_until:
            self._demote("renew_deadline_missed")
            return
        renewed = self._lease.renew(term.token, timeout=term.valid_until - sent)
        if renewed == STEP_DOWN:
            log_event(log, logging.INFO, "step_down_requested", site=self._site, token=term.token)
            self._step_down_requested.set()
            return
        if renewed is None:
            self._demote("lease_lost")
            return
        if self._clock() >= term.valid_until:
            # The reply came after the deadline: is_leader has already turned
            # false, and a term must be one unbroken stretch. Start over.
            self._demote("renew_deadline_missed")
            return
        self._succeeded()
        self.counters["renewals"] += 1
        # Late against the last renewal, or against the term's start: a
        # follower woken by a release counts its term from the start of its
        # wait (seconds back), but its first renewal is not late for that.
        previous = max(term.valid_until - self._config.renew_deadline, term.started_at)
        if sent - previous > self._config.renew_interval * LATE_RENEWAL_FACTOR:
            log_event(
                log, logging.WARNING, "renewed_late", site=self._site, token=term.token,
                since_last_ms=round((sent - previous) * 1000),
            )
        with self._lock:
            self._term = Term(term.token, term.started_at, sent + self._config.renew_deadline)
        self._next_renew_at = sent + self._config.renew_interval
        self._note_readiness(renewed.ready, renewed.ready_elsewhere)
        if not renewed.ready and renewed.ready_elsewhere:
            self._hand_over("not_ready")

    def _demote(self, reason: str, record_step_down: bool = True) -> Optional[Term]:
        with self._lock:
            term, self._term = self._term, None
        if term is None:
            return None
        self.counters["demoted"] += 1
        log_event(log, logging.INFO, "demoted", site=self._site, token=term.token, reason=reason)
        self._runner.submit("on_demoted", self._callbacks.on_demoted, reason)
        # Every path from here may release the lease: let the local work stop
        # before another site may start it.
        self._runner.drain(DEMOTED_CALLBACK_GRACE)
        if record_step_down:
            # Free the lease if it is still ours (others need not wait for it
            # to expire) and leave the step-down in the history.
            self._pending_step_down = (term.token, reason)
        return term

    def _record_pending_step_down(self) -> None:
        if self._pending_step_down is None:
            return
        token, reason = self._pending_step_down
        released, problems = self._lease.release(
            token, reason, event="stepped_down", timeout=self._config.socket_timeout
        )
        self._pending_step_down = None
        for problem in problems:
            self._report_corrupt(problem)
        log_event(log, logging.INFO, "stepped_down", site=self._site, token=token, reason=reason, released=released)

    def _handle_step_down(self) -> None:
        self._step_down_requested.clear()
        self._step_down_result = self._hand_over("step_down")
        self._step_down_done.set()

    def _hand_over(self, reason: str) -> bool:
        """Demote, stay out of the race for step_down_hold_off, and release:
        the release wakes the waiting candidates at once."""
        term = self._demote(reason, record_step_down=False)
        if term is None:
            return False
        self._hold_off_until = self._clock() + self._config.step_down_hold_off
        return self._release(term.token, reason)

    def _release(self, token: int, reason: str) -> bool:
        """Release with a few quick retries: a lease left behind costs the
        other sites a full ttl of waiting."""
        backoff = Backoff(self._config.retry_backoff_min, self._config.retry_backoff_max / 4)
        for attempt in range(3):
            try:
                released, problems = self._lease.release(token, reason, timeout=self._config.socket_timeout)
                for problem in problems:
                    self._report_corrupt(problem)
                log_event(
                    log, logging.INFO, "released", site=self._site, token=token,
                    reason=reason, released=released,
                )
                self.counters["released"] += int(released)
                return released
            except RedisError as exc:
                log_event(
                    log, logging.WARNING, "release_failed", site=self._site, token=token,
                    attempt=attempt + 1, error=f"{type(exc).__name__}: {exc}",
                )
                time.sleep(backoff.next())
        return False

    # trouble -------------------------------------------------------------

    def _on_primary_changed(self, exc: PrimaryChanged) -> None:
        """The lease's connection reached another Redis server than before (a
        failover or a restart: election/primary.py). The lease, the fence and
        the history there may lack the last writes, so: a leader steps down at
        once (its lease there may be gone and handed to someone else already);
        every site holds off for the quarantine — the longest an earlier
        leader, cut off from the old primary, may still believe it leads is
        its renew deadline, and ``failover_quarantine`` (the ttl by default)
        covers that with the lease's own margin for clock drift; and the fence
        is lifted FAILOVER_TOKEN_STEP above the highest token this site has
        seen. The quarantine is written to Redis (scripts.QUARANTINE), so
        sites that did not see the change, or started since, wait too."""
        self.counters["primary_changes"] += 1
        log_event(log, logging.WARNING, "redis_primary_changed", site=self._site,
                  previous_run_id=exc.previous.run_id, run_id=exc.current.run_id,
                  server=f"{exc.current.server}-{exc.current.version}", leader=self._term is not None)
        self._demote("redis_primary_changed")
        quarantine = self._config.failover_quarantine
        self._hold_off_until = max(self._hold_off_until, self._clock() + quarantine)
        self._highest_token += FAILOVER_TOKEN_STEP
        detail = (f"site={self._site} previous_run_id={exc.previous.run_id} run_id={exc.current.run_id} "
                  f"token_floor={self._highest_token}")
        try:
            left = self._lease.quarantine(round(quarantine * 1000), self._highest_token, detail,
                                          timeout=self._config.socket_timeout)
        except (RedisError, LeaseCorrupt) as error:  # held off locally all the same
            log_event(log, logging.WARNING, "quarantine_not_written", site=self._site,
                      error=f"{type(error).__name__}: {error}")
            return
        log_event(log, logging.WARNING, "election_quarantined", site=self._site, ms_left=left,
                  token_floor=self._highest_token)
        self._quarantine_reported = True

    def _on_redis_error(self, exc: RedisError) -> None:
        if self._stopping.is_set() and self._term is None:
            return  # stop() cut a follower's BLPOP on purpose
        delay = self._backoff.next()
        self._redis_ok = False
        self.counters["redis_errors"] += 1
        if self._term is not None:
            self.counters["renew_failures"] += 1
        self._outage.failed(exc, leading=self._term is not None)
        term = self._term
        if term is None:
            self._sleep(delay)
            return
        now = self._clock()
        if now >= term.valid_until:
            self._demote("renew_deadline_missed")
        else:
            # Retry the renewal soon, but never past the deadline.
            self._next_renew_at = now + min(delay, term.valid_until - now)

    def _report_corrupt(self, exc: LeaseCorrupt) -> None:
        now = self._clock()
        key = (exc.key, exc.problem)
        if now - self._last_corrupt_report.get(key, -1e9) < 60:
            return
        self._last_corrupt_report[key] = now
        log_event(
            log, logging.ERROR, "lease_corrupt", site=self._site, key=exc.key,
            problem=exc.problem, pttl_ms=exc.pttl_ms, fix=exc.fix,
        )

    def _finish(self) -> None:
        term = self._demote("stopped", record_step_down=False)
        if term is not None:
            self._release(term.token, "stopped")
        elif self._wait_cut:
            self._release_if_ours()
        self._lease.close()

    def _release_if_ours(self) -> None:
        """stop() cut a wait whose ACQUIRE may have run just before: if it
        took the lease, the reply was lost with the connection. Give such a
        lease back rather than let the other sites wait out its ttl."""
        try:
            record = self._lease.read(timeout=self._config.socket_timeout)
        except (RedisError, LeaseCorrupt):
            return  # nothing Baton can tell is ours
        if record is not None and record.holder == self._lease.identity.holder:
            self._release(record.token, "stopped")
