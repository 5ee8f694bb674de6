"""The peer dead-man's switch: every site watches the one that leads.

A scheduler that runs in one process cannot tell anyone that it stopped. A
Baton deployment has two or more sites looking at the same lease and the
same schedule, so each site's master runs a :class:`Watchdog` (only where
alerts are configured) that every ``WATCHDOG_INTERVAL_S`` reads the lease and
the schedule's slots — one round trip, wherever it runs — and raises
(alerts.py), with a recovery when it ends:

- ``no_leader`` — nobody has held the lease for ``BATON_ALERT_NO_LEADER_S``
  (60 s): every site is down, crash-looping, or cut off from Redis;
- ``not_renewing`` — a lease whose holder has not renewed it for longer than
  its renew deadline (the lease's age since renewal, from its TTL: no clock
  is compared across dynos). A leader frozen (SIGSTOP, a stuck host) or cut
  off is seen within the deadline + one interval (7 + 10 s at the defaults),
  before its lease expires and another site takes over;
- ``overdue:<entry>`` — an entry's next slot is past by more than its grace
  (+ ``OVERDUE_MARGIN_S``) while a leader holds the lease: the leader renews,
  but its scheduler does not advance (wedged, or Redis refusing writes). A
  tick that was enqueued and not run is not this: its own record says why
  (tick_alerts.py);
- ``leader_changed`` (opt-in, ``BATON_ALERT_LEADER_CHANGES``) — a new term,
  raised by the new leader's own watchdog.

The wedged leader's own process raises nothing, and need not: every other
site raises the same conditions, and the first one's alert is the one sent.
What it does not see: a leader whose scheduler advances slots while its
workers run nothing (the ticks' own records and alerts say so: not_started,
late_start); a deployment with a single site that is itself down.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import RedisError

from election import Keys, LeaseCorrupt, read_lease
from election.logfmt import log_event

from .alerts import Alert, AlertSender, raise_alert
from .ticks import grace_of

log = logging.getLogger("baton.watchdog")

# How often each site looks: 3 commands (the lease, the slots, the open
# conditions) and one LPOP of the alert outbox per look — 0.4 commands/s —
# only where alerts are configured.
WATCHDOG_INTERVAL_S = 10.0

# A slot counts as overdue this long after its grace: the leader advances a
# slot at its time, within milliseconds; a minute covers a leader that was
# just elected and is writing the schedule, and a slow Redis.
OVERDUE_MARGIN_S = 60.0


class Watchdog:
    def __init__(self, connection, prefix: str, entries, zone, *, site: str, holder: str, renew_deadline: float,
                 alerts, leading=lambda: True, interval: float = WATCHDOG_INTERVAL_S):
        self.connection, self.prefix, self.zone = connection, prefix, zone
        self.entries = {entry.name: entry for entry in entries}
        self.site, self.holder, self.renew_deadline = site, holder, renew_deadline
        self.alerts, self.interval = alerts, interval
        self.leading = leading
        self.sender = AlertSender(connection, prefix, alerts, site)
        self._keys = Keys(prefix)
        self._free_since = None
        self._last_token = None
        self._open = set()  # conditions open at the last look
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="baton-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        if self.alerts.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.look()
            except RedisError as exc:  # the outage itself is the elector's to report
                log_event(log, logging.DEBUG, "watchdog_skipped", site=self.site, error=type(exc).__name__)
            except Exception as exc:  # a bug must not end the watch
                log_event(log, logging.ERROR, "watchdog_error", site=self.site, error=repr(exc))
            self.sender.drain_now()  # in this thread: a broken webhook delays the next look, nothing else
            if not self.leading():  # a following site keeps no connection between looks (Mini's 20)
                self.connection.connection_pool.disconnect(inuse_connections=False)  # shared: idle ones only

    def look(self, now: float | None = None) -> None:
        """One look (see the module docstring)."""
        now = time.time() if now is None else now
        try:
            record = read_lease(self.connection, self.prefix)
        except LeaseCorrupt:
            return  # the electors report junk at the lease key
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zrange(self._keys.scheduled_jobs, 0, -1, withscores=True)
            pipe.hkeys(self._keys.alerts_open)
            slots, opened = pipe.execute()
        # Only a change is written: an open condition is not opened again, a
        # closed one not closed again (no command per entry per look).
        self._open = {key.decode() if isinstance(key, bytes) else key for key in opened}
        self._watch_leader(record, now)
        self._watch_slots(record, slots, now)

    def _raise(self, kind, key, summary, recovered=False, event=False, **fields) -> None:
        if not event and (key in self._open) != recovered:
            return
        raise_alert(self.connection, self.prefix,
                    Alert(kind, key, summary, {"seen_by": self.site, "at": time.time(), **fields}, recovered), event)

    def _watch_leader(self, record, now: float) -> None:
        if record is None:
            self._free_since = self._free_since or time.monotonic()
            free_for = time.monotonic() - self._free_since
            if free_for >= self.alerts.no_leader_after_s:
                self._raise("no_leader", "no_leader", f"no site has led for {free_for:.0f} s",
                            free_for_s=round(free_for))
            return
        self._free_since = None
        self._raise("no_leader", "no_leader", f"site {record.site} leads again (token {record.token})",
                    recovered=True, leader=record.site, token=record.token)
        since_renewal = (record.ttl_ms - record.pttl_ms) / 1000
        if since_renewal > self.renew_deadline:
            self._raise("not_renewing", "not_renewing",
                        f"site {record.site} holds the lease but has not renewed it for {since_renewal:.1f} s "
                        f"(deadline {self.renew_deadline:g} s): frozen or cut off",
                        leader=record.site, holder=record.holder, token=record.token,
                        since_renewal_s=round(since_renewal, 1), lease_left_s=round(record.pttl_ms / 1000, 1))
        else:
            self._raise("not_renewing", "not_renewing", f"site {record.site} renews the lease (token {record.token})",
                        recovered=True, leader=record.site, token=record.token)
        if self.alerts.leader_changes and record.holder == self.holder and record.token != self._last_token:
            self._raise("leader_changed", f"leader_changed:{record.token}",
                        f"site {record.site} leads now (token {record.token})", event=True, leader=record.site,
                        token=record.token)
        self._last_token = record.token

    def _watch_slots(self, record, slots, now: float) -> None:
        template = f"{self.prefix}-entry-"
        for member, scheduled in slots:
            name = (member.decode() if isinstance(member, bytes) else member)[len(template):]
            entry = self.entries.get(name)
            if entry is None:
                continue  # written by another version of the schedule
            late = now - scheduled
            if record is not None and late > grace_of(entry, scheduled, self.zone) + OVERDUE_MARGIN_S:
                self._raise("entry_overdue", f"overdue:{name}",
                            f"{name} was due {late:.0f} s ago and site {record.site}, which leads, has not "
                            f"scheduled it", entry=name, due=scheduled, leader=record.site, token=record.token)
            elif late <= 0:
                self._raise("entry_overdue", f"overdue:{name}", f"{name} is scheduled again",
                            recovered=True, entry=name, due=scheduled)
