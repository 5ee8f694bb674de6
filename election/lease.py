"""The lease store: a narrow interface over one Redis connection.

Everything the election needs from Redis is here — acquire, renew, release,
read, and block until a release is signalled then acquire — each one round
trip with an explicit timeout. The connection is used by one thread at a time
(the elector's); :meth:`Lease.interrupt` is the one call meant for another
thread.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from . import scripts
from .connection import connection_pool
from .errors import LeaseCorrupt, RedisFull, ReplicasBehind
from .identity import Identity
from .keys import Keys
from .logfmt import log_event
from .primary import PrimaryChanged, ServerFacts, parse_info
from .record import LeaseRecord

log = logging.getLogger("baton.election")

# How long a release signal waits in the list for a candidate that was between
# two commands when it was pushed. Long enough for a round trip or a reconnect,
# short enough that a stale signal wakes nobody much later.
SIGNAL_TTL_MS = 1000

# A follower is counted as waiting until the lease it was told about expires,
# plus this long: the time it may take to come back from its wait and ask
# again. Counting it a little too long only leaves a spare signal, which
# expires with SIGNAL_TTL_MS.
WAITER_GRACE_MS = 1000

# How many waiting candidates one release wakes (one signal each; BLPOP
# serves the longest-blocked first). Two, not all: every woken follower races
# for the lease and then does a little work to wait again, and with 20 sites
# on two CPUs the winner's takeover waited for the 18 losers' work (handoff
# p99 11 ms; 2.9 ms waking two: make bench, sites). The second one is the
# spare: if the first is stalled, the other still takes over at once. The
# followers not woken learn who leads at their next look (within
# ElectionConfig.follower_wait_max).
MAX_WOKEN_PER_RELEASE = 2

# The shortest wait a call is given: a budget already spent still gets one
# look at the socket rather than an error before trying.
_MIN_WAIT = 0.001

# For a connection handed in without a socket timeout: no call may block
# forever, the elector's loop depends on getting control back.
_DEFAULT_SOCKET_TIMEOUT = 2.0

# What Lease.renew returns when an operator asked this holder to step down.
STEP_DOWN = "step_down"

# A step-down request the holder has not seen within this long is dropped:
# it was meant for a term that has since ended.
STEP_DOWN_REQUEST_TTL_S = 60


@dataclass(frozen=True)
class Acquired:
    token: int
    acquired_at: int
    event: str  # 'acquired', 'takeover' (the previous term expired) or 'reacquired'
    history_error: str = ""
    ready: bool = True  # the site had a live readiness mark (always True without require_ready)


@dataclass(frozen=True)
class NotReady:
    """ACQUIRE's answer to a candidate that requires readiness and whose site
    has none (election/readiness.py): ``record`` is the holder's lease, or
    None when the lease was free and left to a ready site's waiting
    candidate. Such a candidate is not noted as waiting: no release wakes it."""

    record: "LeaseRecord | None"


@dataclass(frozen=True)
class Renewed:
    """A renewal that went through: the server's time of it (ms), whether the
    leader's site is still ready, and if not, whether a ready candidate of
    another site waits to take over (both True-ish without require_ready)."""

    at_ms: int
    ready: bool = True
    ready_elsewhere: bool = False


@dataclass(frozen=True)
class Quarantined:
    """ACQUIRE's answer while a failover's quarantine lasts (no term starts)."""

    pttl_ms: int
    detail: str = ""


@dataclass(frozen=True)
class Woken:
    """What :meth:`Lease.wait_then_acquire` saw."""

    signalled: bool  # a release ended the wait (False: it timed out)
    outcome: "Acquired | LeaseRecord | Quarantined | NotReady"  # what the ACQUIRE behind the wait got
    signal_problem: "LeaseCorrupt | None" = None  # junk at the signal key: no release can end a wait


class Script:
    """A Lua constant run with EVALSHA, falling back to EVAL once per
    connection when the server does not know it yet (restart, SCRIPT FLUSH)."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_ACQUIRE = Script(scripts.ACQUIRE)
_RENEW = Script(scripts.RENEW)
_RELEASE = Script(scripts.RELEASE)
_READ = Script(scripts.READ)
_QUARANTINE = Script(scripts.QUARANTINE)


def _record(flat: list, pttl_ms: int, key: str) -> LeaseRecord:
    fields = dict(zip(flat[::2], flat[1::2]))
    try:
        return LeaseRecord.from_fields(fields, pttl_ms)
    except ValueError as exc:  # the scripts check the same; a second line of defence
        raise LeaseCorrupt(key, str(exc), pttl_ms) from None


def eval_script(client: redis.Redis, script: Script, keys: list, args: list) -> list:
    """Run ``script`` through any redis-py client (EVALSHA, then EVAL once if
    the server lacks it); the reply's bytes decoded to str."""
    try:
        reply = client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        reply = client.eval(script.source, len(keys), *keys, *args)
    return [item.decode() if isinstance(item, bytes) else item for item in reply]


def read_lease(client: redis.Redis, prefix: str = "baton") -> "LeaseRecord | None":
    """The current lease through any redis-py client (the worker's, the web
    app's), classified exactly like :meth:`Lease.read`: None when free,
    :class:`LeaseCorrupt` for junk."""
    keys = Keys(prefix)
    reply = eval_script(client, _READ, [keys.lease], [])
    if reply[0] == "none":
        return None
    if reply[0] == "corrupt":
        raise LeaseCorrupt.from_reply(reply)
    return _record(reply[2:], int(reply[1]), keys.lease)


def request_step_down(client: redis.Redis, prefix: str = "baton") -> "LeaseRecord | None":
    """Ask the current leader to step down at its next renewal (within
    ``renew_interval``). Returns the record of the leader asked, or None if
    nobody leads. Works from anywhere that reaches Redis."""
    record = read_lease(client, prefix)
    if record is not None:
        client.set(Keys(prefix).step_down, record.holder, ex=STEP_DOWN_REQUEST_TTL_S)
    return record


class Lease:
    """One deployment's lease, seen by one candidate over one connection.

    Guarantees (with a single Redis primary; a failover to a replica that
    missed the last write can hand the lease out twice unless
    ``replicas_ack`` is set — see below and the README's "Replicated Redis"):

    - at most one holder at a time: ACQUIRE writes only where no lease exists;
    - renew and release act only while ``holder`` and ``token`` both match;
    - tokens strictly increase across acquisitions (INCR ``{prefix}:fence``,
      never below the ``token_floor`` a caller passes);
    - the lease always carries a TTL.

    With ``replicas_ack`` = n > 0, an acquisition or a renewal counts only once
    n replicas have acknowledged it (``WAIT n``, sent after the script on the
    same connection, for at most ``replica_ack_timeout`` s): otherwise it
    raises :class:`ReplicasBehind` — an acquisition is given back first, so a
    term never starts on a write a failover could lose.

    With ``require_ready``, the candidate competes only while its site is
    ready (election/readiness.py): ACQUIRE answers :class:`NotReady` instead
    of noting it as waiting, and RENEW says when a ready site waits to take
    over (:class:`Renewed`).

    Every reconnect reads INFO, and one that finds another server process
    than before (a promoted replica, a restarted primary) raises
    :class:`PrimaryChanged` before its command is sent: writes made on the
    previous server may be gone, and the elector must know.
    """

    def __init__(
        self,
        connection: redis.Connection,
        identity: Identity,
        ttl_ms: int,
        prefix: str = "baton",
        history_maxlen: int = 1000,
        replicas_ack: int = 0,
        replica_ack_timeout: float = 0.5,
        require_ready: bool = False,
    ):
        self._conn = connection
        self.require_ready = bool(require_ready)
        # Every call without a budget of its own gets this one (connect, handshake, reply).
        self._socket_timeout = connection.socket_timeout or _DEFAULT_SOCKET_TIMEOUT
        self.identity = identity
        self.ttl_ms = int(ttl_ms)
        self.keys = Keys(prefix)
        self.history_maxlen = history_maxlen
        self.replicas_ack = int(replicas_ack)
        self.replica_ack_timeout = float(replica_ack_timeout)
        self.server: ServerFacts | None = None  # the server last connected to, from its INFO
        # Set when an acquisition went unacknowledged: until INFO shows enough
        # replicas again, candidates ask INFO instead of writing a lease (and
        # using up a token) that would only be given back.
        self._replicas_missing = False
        self._info_refused = False

    @classmethod
    def from_url(
        cls,
        url: str,
        identity: Identity,
        ttl_ms: int,
        prefix: str = "baton",
        history_maxlen: int = 1000,
        socket_timeout: float = 2.0,
        role: str = "elector",
        replicas_ack: int = 0,
        replica_ack_timeout: float = 0.5,
        require_ready: bool = False,
        **connection_kwargs,
    ) -> "Lease":
        """Open (lazily) the one connection this lease uses.

        ``url`` is either form election.connection takes (one server, or
        ``redis+sentinel://``). ``connection_kwargs`` go to redis-py (e.g.
        ``ssl_cert_reqs="none"`` for Heroku's self-signed certificate). The
        connection names itself ``baton:<site>:<role>`` so ``redis-cli CLIENT
        LIST`` shows who is there.
        """
        options = dict(
            client_name=f"baton:{identity.site}:{role}",
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # The elector retries on its own schedule (backoff, deadlines);
            # a hidden retry inside redis-py would blur both.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        options.update(connection_kwargs)
        pool = connection_pool(url, **options)
        return cls(pool.make_connection(), identity, ttl_ms, prefix, history_maxlen, replicas_ack,
                   replica_ack_timeout, require_ready)

    # -- transport ---------------------------------------------------------

    def _call(self, *args, timeout=None, deadline=None):
        """Send one command and read its reply, the whole of it bounded by
        ``timeout`` s (or the monotonic ``deadline``; default: the socket
        timeout) — a reconnect included.

        redis-py reconnects lazily inside send_command, with its own connect
        timeout for the TCP (and TLS) connect and its socket timeout for each
        handshake reply (CLIENT SETNAME, AUTH). A leader's budget is the time
        left to its renew deadline, often less than those: so before a
        reconnect both are lowered to the budget, and the reply gets whatever
        is left of it after.
        """
        if deadline is None:
            deadline = self._deadline(timeout)
        self._connect_by(deadline)
        self._conn.send_command(*args)
        return self._read_by(deadline)

    def _connect_by(self, deadline: float) -> None:
        """Reconnect if needed, the connect and its handshake done by
        ``deadline``; then see which server it reached (module docstring)."""
        if not self._conn.is_connected:
            budget = min(self._socket_timeout, max(deadline - time.monotonic(), _MIN_WAIT))
            self._conn.socket_connect_timeout = budget
            self._conn.socket_timeout = budget
            self._conn.connect()
            self._identify_server(deadline)

    def _identify_server(self, deadline: float) -> None:
        if self._info_refused:
            return
        self._conn.send_command("INFO")
        try:
            facts = ServerFacts.from_info(self._read_by(deadline))
        except ResponseError as exc:  # a proxy that hides INFO: no failover detection
            self._info_refused = True
            log_event(log, logging.WARNING, "redis_info_refused", site=self.identity.site,
                      error=f"{type(exc).__name__}: {exc}", effect="failovers are not detected by run_id")
            return
        previous, self.server = self.server, facts
        if previous is not None and facts.run_id and previous.run_id != facts.run_id:
            raise PrimaryChanged(previous, facts)

    def _read_by(self, deadline: float):
        # A reply that does not come in time drops the connection (explicitly:
        # redis-py's Sentinel connection does not by default, and would then
        # stay on a primary cut off by a partition, its late replies read as
        # answers to later commands).
        return self._conn.read_response(timeout=max(deadline - time.monotonic(), _MIN_WAIT),
                                        disconnect_on_error=True)

    def _deadline(self, timeout) -> float:
        """When a call given ``timeout`` s (None: the socket timeout) must be done."""
        return time.monotonic() + (self._socket_timeout if timeout is None else timeout)

    def _script(self, script: Script, keys: list, args: list, timeout=None, deadline=None):
        if deadline is None:
            deadline = self._deadline(timeout)
        try:
            return self._call("EVALSHA", script.sha, len(keys), *keys, *args, deadline=deadline)
        except NoScriptError:
            return self._call("EVAL", script.source, len(keys), *keys, *args, deadline=deadline)

    # -- operations --------------------------------------------------------

    def acquire(self, token_floor: int = 0, timeout=None) -> "Acquired | LeaseRecord | Quarantined | NotReady":
        """Take the lease if it is free. Returns :class:`Acquired`, or the
        current holder's :class:`LeaseRecord` (with its time left) if it is not
        — and then notes this candidate as waiting, so a release wakes it.
        :class:`Quarantined` during a failover's quarantine; :class:`NotReady`
        with ``require_ready`` when this site is not (see the class).
        Raises :class:`LeaseCorrupt` for junk at a Baton key, redis errors on
        transport trouble."""
        keys, args = self._acquire_keys_args(token_floor)
        deadline = self._deadline(timeout)
        if self._replicas_missing:
            self._check_replicas_back(deadline)
        outcome = self._acquire_outcome(self._script(_ACQUIRE, keys, args, deadline=deadline))
        return self._acknowledged_acquisition(outcome, deadline)

    def _check_replicas_back(self, deadline: float) -> None:
        info = parse_info(self._call("INFO", "replication", deadline=deadline))
        online = sum(1 for key, value in info.items() if key.startswith("slave") and key[5:].isdigit()
                     and "state=online" in value)
        if online < self.replicas_ack:
            raise ReplicasBehind("acquire (replicas online)", online, self.replicas_ack, 0)
        self._replicas_missing = False

    def _acknowledged_acquisition(self, outcome, deadline: float):
        """With replicas_ack, an acquisition counts once replicated; otherwise
        it is given back and ReplicasBehind raised."""
        if not (self.replicas_ack and isinstance(outcome, Acquired)):
            return outcome
        try:
            self._await_replicas("acquire", deadline)
        except ReplicasBehind:
            self._replicas_missing = True
            try:
                self.release(outcome.token, "replicas_behind", event="stepped_down", timeout=self._socket_timeout)
            except RedisError:
                pass  # it expires with its ttl
            raise
        return outcome

    def _await_replicas(self, what: str, deadline: float) -> None:
        """WAIT for replicas_ack replicas to have this connection's writes,
        for at most replica_ack_timeout and never past ``deadline``."""
        left_ms = int((deadline - time.monotonic()) * 1000)
        wait_ms = max(1, min(int(self.replica_ack_timeout * 1000), left_ms - 1))
        acked = int(self._call("WAIT", self.replicas_ack, wait_ms, deadline=deadline))
        if acked < self.replicas_ack:
            raise ReplicasBehind(what, acked, self.replicas_ack, wait_ms)

    def quarantine(self, quarantine_ms: int, token_floor: int, detail: str, timeout=None) -> int:
        """Hold every election off for ``quarantine_ms`` and raise the fence to
        ``token_floor`` (scripts.QUARANTINE). Returns the quarantine's ms left."""
        reply = self._script(_QUARANTINE, [self.keys.quarantine, self.keys.fence, self.keys.history],
                             [int(quarantine_ms), int(token_floor), detail, self.history_maxlen,
                              self.identity.site], timeout=timeout)
        if reply[0] == "corrupt":
            raise LeaseCorrupt.from_reply(reply)
        return int(reply[1])

    def _acquire_keys_args(self, token_floor: int) -> tuple:
        keys = [self.keys.lease, self.keys.fence, self.keys.history, self.keys.waiters, self.keys.elected_channel,
                self.keys.quarantine, self.keys.ready]
        args = [self.identity.holder, self.identity.site, self.ttl_ms, int(token_floor),
                self.history_maxlen, WAITER_GRACE_MS, int(self.require_ready)]
        return keys, args

    def _acquire_outcome(self, reply) -> "Acquired | LeaseRecord | Quarantined | NotReady":
        if reply[0] == "acquired":
            return Acquired(int(reply[1]), int(reply[2]), reply[3], reply[4], bool(int(reply[5])))
        if reply[0] == "deferred":
            return NotReady(None)
        if reply[0] == "unready":
            return NotReady(_record(reply[2:], int(reply[1]), self.keys.lease))
        if reply[0] == "quarantined":
            return Quarantined(int(reply[1]), reply[2] or "")
        if reply[0] == "corrupt":
            raise LeaseCorrupt.from_reply(reply)
        if reply[0] == "oom":
            raise RedisFull(reply[1])
        return _record(reply[2:], int(reply[1]), self.keys.lease)

    def renew(self, token: int, timeout=None) -> "Renewed | str | None":
        """Extend the lease by its ttl if still held under ``token``. Returns
        :class:`Renewed`, None if the lease is lost, or :data:`STEP_DOWN` if
        an operator asked this holder to step down."""
        deadline = self._deadline(timeout)
        reply = self._script(
            _RENEW,
            [self.keys.lease, self.keys.step_down, self.keys.ready, self.keys.waiters],
            [self.identity.holder, token, self.ttl_ms, self.identity.site, int(self.require_ready)],
            deadline=deadline,
        )
        if reply[0] == "step_down":
            return STEP_DOWN
        if reply[0] != "renewed":
            return None
        if self.replicas_ack:
            self._await_replicas("renew", deadline)
        return Renewed(int(reply[1]), bool(int(reply[2])), bool(int(reply[3])))

    def release(self, token: int, reason: str, event: str = "released", timeout=None):
        """Delete the lease if still held under ``token`` and wake every
        waiting candidate. Safe to repeat. Returns ``(released, problems)``;
        problems lists Baton keys that could not be read or written (junk in
        them)."""
        released, signal_error, history_error, waiters_error = self._script(
            _RELEASE,
            [self.keys.lease, self.keys.signal, self.keys.history, self.keys.waiters],
            [self.identity.holder, token, event, reason, SIGNAL_TTL_MS, self.history_maxlen,
             MAX_WOKEN_PER_RELEASE],
            timeout=timeout,
        )
        problems = []
        if signal_error:
            problems.append(LeaseCorrupt(self.keys.signal, signal_error))
        if history_error:
            problems.append(LeaseCorrupt(self.keys.history, history_error))
        if waiters_error:
            problems.append(LeaseCorrupt(self.keys.waiters, waiters_error))
        return bool(released), problems

    def read(self, timeout=None) -> "LeaseRecord | None":
        """The current lease, or None if nobody holds it."""
        reply = self._script(_READ, [self.keys.lease], [], timeout=timeout)
        if reply[0] == "none":
            return None
        if reply[0] == "corrupt":
            raise LeaseCorrupt.from_reply(reply)
        return _record(reply[2:], int(reply[1]), self.keys.lease)

    def wait_then_acquire(self, timeout: float, token_floor: int = 0, socket_margin: float = 2.0,
                          reply_within: "float | None" = None) -> Woken:
        """Block until a release is signalled or ``timeout`` s pass (BLPOP),
        then :meth:`acquire` — in one round trip.

        The ACQUIRE is pipelined behind the BLPOP: Redis keeps it in the
        connection's input buffer while the BLPOP blocks, and runs it in the
        same event-loop turn that serves the BLPOP. A follower woken by a
        release therefore wakes up holding the lease (or knowing who does),
        instead of asking one more round trip later.

        The ACQUIRE runs however the wait ends (signal, timeout, junk at the
        signal key), and its reply is always read and returned: a lease taken
        this way is never left unknown to its holder. Since it may run up to
        ``timeout`` s after this call, a term it starts must be counted from
        the call, not from the reply (``ElectionConfig.follower_wait_max``).

        The BLPOP's reply is read with ``socket_margin`` s more than its
        server-side timeout: Redis may answer a timed-out BLPOP late (see
        ``ElectionConfig.server_timer_slack``) — but never more than
        ``reply_within`` s from now when given (a follower passes the time
        left to the lease's expiry: past it, waiting on gains nothing). A wait
        not answered by then raises redis' TimeoutError and the connection is
        dropped, the ACQUIRE queued behind the BLPOP with it.
        """
        # BLPOP takes seconds as a decimal since Redis 6; 0 would mean forever.
        seconds = max(round(timeout, 3), 0.001)
        keys, args = self._acquire_keys_args(token_floor)
        deadline = time.monotonic() + seconds + socket_margin
        if reply_within is not None:
            deadline = min(deadline, time.monotonic() + max(reply_within, _MIN_WAIT))
        self._connect_by(deadline)
        self._conn.send_packed_command(self._conn.pack_commands([
            ("BLPOP", self.keys.signal, f"{seconds:.3f}"),
            ("EVALSHA", _ACQUIRE.sha, len(keys), *keys, *args),
        ]))
        signalled, signal_error = False, None
        try:
            signalled = self._read_by(deadline) is not None
        except ResponseError as exc:
            signal_error = exc  # the ACQUIRE's reply still follows; read it first
        # As in _script: the ACQUIRE and its EVAL fallback share one budget.
        acquire_deadline = self._deadline(None)
        try:
            reply = self._read_by(acquire_deadline)
        except NoScriptError:
            # The server lost its scripts (restart, SCRIPT FLUSH): send the source.
            reply = self._call("EVAL", _ACQUIRE.source, len(keys), *keys, *args, deadline=acquire_deadline)
        outcome = self._acknowledged_acquisition(self._acquire_outcome(reply), acquire_deadline)
        if signal_error is None:
            return Woken(signalled, outcome)
        if str(signal_error).startswith("WRONGTYPE"):
            return Woken(False, outcome, self._signal_corrupt())
        if isinstance(outcome, Acquired):
            return Woken(False, outcome)  # the lease first; the error shows again next wait
        raise signal_error

    def _signal_corrupt(self) -> LeaseCorrupt:
        """BLPOP said WRONGTYPE: someone wrote another type at the signal key
        by hand, and no release can wake anyone through it."""
        kind = self._call("TYPE", self.keys.signal)
        return LeaseCorrupt(self.keys.signal, f"wrong type {kind} (expected list)",
                            int(self._call("PTTL", self.keys.signal)))

    def history(self, count: int = 20, timeout=None) -> list:
        """Newest-first entries of ``{prefix}:history`` as dicts (with ``id``)."""
        reply = self._call("XREVRANGE", self.keys.history, "+", "-", "COUNT", count, timeout=timeout)
        return [{"id": entry_id, **dict(zip(kv[::2], kv[1::2]))} for entry_id, kv in reply]

    def interrupt(self) -> None:
        """Cut a blocking call made on another thread (a follower's BLPOP), so
        that stop() does not wait out the lease. The blocked call raises
        ConnectionError; the connection reconnects on its next use.

        redis-py has no public way to do this; shutting the socket down is
        safe from any thread, unlike closing it.
        """
        sock = getattr(self._conn, "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._conn.disconnect()
