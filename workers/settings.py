"""Settings shared by the scheduler and the worker, read from the environment
and validated at start: a bad value stops the process with one line naming
the variable and the expected form."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from election import ElectionConfig, Identity, Lease
from election.connection import SENTINEL_URL_FORM, SentinelURL, client, is_sentinel_url

from .alerts import AlertConfig
from .shutdown import MAX_GRACE_S, PLATFORM_KILL_AFTER_S

_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class ConfigError(ValueError):
    """One line: the variable, what it must look like, what it was."""


def _seconds(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, like {default}; got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, like {default}; got {raw!r}")
    return value


def _flag(env, name, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no); got {raw!r}")


def _alerts(env) -> AlertConfig:
    """BATON_ALERT_WEBHOOK_URL (one or more http(s) URLs, separated by commas
    or spaces), BATON_ALERT_FORMAT (json | slack), BATON_ALERT_NO_LEADER_S,
    BATON_ALERT_LEADER_CHANGES (workers/alerts.py)."""
    urls = tuple(u for u in re.split(r"[,\s]+", env.get("BATON_ALERT_WEBHOOK_URL") or "") if u)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = f"{parts.scheme}://{parts.hostname or ''}..." if parts.scheme else repr(url[:20])
            raise ConfigError("BATON_ALERT_WEBHOOK_URL must be one or more http:// or https:// URLs separated by "
                              f"commas; got {shown}")
    form = (env.get("BATON_ALERT_FORMAT") or "json").lower()
    if form not in ("json", "slack"):
        raise ConfigError(f"BATON_ALERT_FORMAT must be json or slack (Slack-compatible: {{\"text\": ...}}); "
                          f"got {env.get('BATON_ALERT_FORMAT')!r}")
    return AlertConfig(urls=urls, slack=form == "slack",
                       no_leader_after_s=_seconds(env, "BATON_ALERT_NO_LEADER_S", 60.0),
                       leader_changes=_flag(env, "BATON_ALERT_LEADER_CHANGES", False))


def _whole(env, name, default: int, low: int, high: int, what: str) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ConfigError(f"{name} must be {what}, a whole number from {low} to {high}; got {raw!r}")
    return value


# BATON_WORKER_CONCURRENCY: how many jobs one site runs at once — as many
# leader-gated RQ worker processes (each runs one job at a time, in a work
# horse it forks), all in the web dyno (embedded) or all in the worker dyno
# (workers/pool.py). One worker means one long job holds back every other
# entry: their ticks wait in the queue and expire past their grace.
#
# What each worker costs, measured (make bench: bench/concurrency_bench.py,
# the run of fdfbb3f; a gunicorn web dyno with WEB_CONCURRENCY=2, PSS summed
# over every process of the dyno; jobs that sleep and allocate nothing;
# 2 cores, Python 3.11):
#
#   N   PSS idle / N jobs   RSS idle / N jobs   connections: leader idle / N jobs, follower
#   1    88 /  95 MB        162 / 192 MB        4 / 5,   3
#   2   113 / 127 MB        197 / 258 MB        5 / 7,   3
#   4   163 / 190 MB        268 / 389 MB        7 / 11,  3
#
# i.e. +25 MB PSS per worker (+32 MB with its job running), +1 connection
# on the leading site per worker (+1 more, its work horse's, while its job
# runs), and none on a following site: a following web dyno runs one
# worker, and starts the others when it is elected (workers/pool.py).
#
# Heroku's Mini Redis (app.json) allows 20 connections for every site
# together, and a restart overlap holds three dynos at once (the stopping
# leader, its successor, the other site): sampled every 50 ms, 14 / 16 / 18
# for N = 1 / 2 / 4; counted by hand, the worst case (every HTTP worker
# connected, every worker of the old leader running a job) is 17 / 19 / 23.
# So 2 — two jobs at once, a long entry no longer holds back every other —
# fits the 19 the README promises, with ~390 MB of the dyno's 512 left for
# the jobs themselves; 3 and more want a Redis plan with more connections.
# In a worker dyno (BATON_EMBEDDED_WORKER=false) every worker runs always.
DEFAULT_WORKER_CONCURRENCY = 2
# 16 workers running jobs already take ~500 MB (PSS) before the jobs' own.
MAX_WORKER_CONCURRENCY = 16


_URL_FORM = "redis://[:password@]host:port[/db] (or rediss:// for TLS)"

# BATON_REDIS_REPLICAS_ACK: how many replicas must acknowledge a lease write
# or a tick claim before it counts (0: off). Replication is asynchronous, so
# without it a failover can lose a term's start or a tick's claim (README,
# "Replicated Redis"). More than a handful of replicas is not a plan anyone runs.
MAX_REPLICAS_ACK = 5

# With it, how long one write waits for its acknowledgements: half the renew
# interval (so a renewal that had to wait still leaves time to retry before
# the next one is due), and never more than this.
MAX_REPLICA_ACK_TIMEOUT_S = 1.0

# The start's look at whether REDIS_URL is a Cluster endpoint waits this long.
CLUSTER_PROBE_TIMEOUT_S = 2.0

# What a process told to use a Cluster endpoint says (at start, and in
# `python -m app check --redis`).
CLUSTER_REFUSED = ("REDIS_URL points at a Redis Cluster endpoint (cluster_enabled:1): Baton and RQ need one "
                   "primary; use a non-cluster plan, or Sentinel (redis+sentinel://)")


def _check_redis_url(name: str, url: str) -> None:
    """Everything redis-py would only trip over at the first connection, as
    one line that never shows the password."""
    if is_sentinel_url(url):
        try:
            SentinelURL.parse(url)
        except ValueError as exc:
            detail = str(exc).replace(urlsplit(url).password or "\0", "***")
            raise ConfigError(f"{name} {detail}") from None
        return
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name} must start with redis://, rediss://, unix:// or redis+sentinel:// "
                          f"({SENTINEL_URL_FORM})")
    parts = urlsplit(url)
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ConfigError(f"{name} must name a host: {_URL_FORM}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raw = parts.netloc.rpartition("@")[2].rpartition(":")[2]
            raise ConfigError(f"{name} must have a port from 1 to 65535 ({_URL_FORM}); got {raw!r}")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(f"{name} must end in a database number like /0 ({_URL_FORM}); got {'/' + db!r}")
    try:
        redis.ConnectionPool.from_url(url).make_connection()  # options in the query string; no connection yet
    except (TypeError, ValueError, redis.RedisError) as exc:
        detail = str(exc).replace(parts.password or "\0", "***")
        raise ConfigError(f"{name} has an option redis-py refuses: {detail}") from None


@dataclass(frozen=True)
class Settings:
    redis_url: str
    prefix: str
    timezone: ZoneInfo
    schedule_module: str
    identity: Identity
    election: ElectionConfig
    tls_verify: bool
    shutdown_grace: float  # how long a running job may take to finish after SIGTERM
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY  # RQ worker processes = jobs the site runs at once
    alerts: AlertConfig = AlertConfig()  # where alerts go (none: alerts are off)
    replicas_ack: int = 0  # replicas that must acknowledge a lease write or a tick claim (0: off)

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        url = env.get("REDIS_URL") or env.get("REDIS_TLS_URL")
        if not url:
            raise ConfigError(f"REDIS_URL must be set to {_URL_FORM}, or {SENTINEL_URL_FORM}")
        _check_redis_url("REDIS_URL" if env.get("REDIS_URL") else "REDIS_TLS_URL", url)
        prefix = env.get("BATON_PREFIX") or "baton"
        if not _PREFIX.match(prefix):
            raise ConfigError(f"BATON_PREFIX must be 1-32 letters, digits, '_' or '-'; got {prefix!r}")
        zone_name = env.get("BATON_TIMEZONE") or "UTC"
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"BATON_TIMEZONE must be an IANA zone name like UTC or Europe/Paris; got {zone_name!r}") from None
        module = env.get("BATON_SCHEDULE") or "workers.schedule"
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", module):
            raise ConfigError(f"BATON_SCHEDULE must be a Python module path like workers.schedule; got {module!r}")
        verify = (env.get("BATON_REDIS_TLS_VERIFY") or "required").lower()
        if verify not in ("required", "none"):
            raise ConfigError(
                "BATON_REDIS_TLS_VERIFY must be 'required' or 'none' (none: Heroku's self-signed certificate); "
                f"got {verify!r}"
            )
        try:
            identity = Identity.from_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        defaults = ElectionConfig()
        try:
            election = ElectionConfig(
                ttl=_seconds(env, "BATON_LEASE_TTL", defaults.ttl),
                renew_interval=_seconds(env, "BATON_RENEW_INTERVAL", defaults.renew_interval),
                renew_deadline=_seconds(env, "BATON_RENEW_DEADLINE", defaults.renew_deadline),
            )
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(
                "BATON_LEASE_TTL, BATON_RENEW_INTERVAL, BATON_RENEW_DEADLINE must satisfy "
                f"0 < interval < deadline < ttl: {exc}"
            ) from None
        grace = _seconds(env, "BATON_SHUTDOWN_GRACE", 20.0)
        if grace > MAX_GRACE_S:
            raise ConfigError(
                f"BATON_SHUTDOWN_GRACE must be at most {MAX_GRACE_S:g} seconds: the platform sends SIGKILL "
                f"{PLATFORM_KILL_AFTER_S:g} s after SIGTERM, and stopping an overrunning job, the handoff and the "
                f"exit need the rest (workers/shutdown.py); got {env['BATON_SHUTDOWN_GRACE']!r}"
            )
        concurrency = _whole(env, "BATON_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY, 1, MAX_WORKER_CONCURRENCY,
                             "the number of jobs one site runs at once")
        replicas_ack = _whole(env, "BATON_REDIS_REPLICAS_ACK", 0, 0, MAX_REPLICAS_ACK,
                              "how many replicas must acknowledge each lease write and tick claim (0: off)")
        return cls(url, prefix, zone, module, identity, election, verify == "required", grace, concurrency,
                   _alerts(env), replicas_ack)

    def redis_kwargs(self) -> dict:
        """Extra redis-py options: Heroku's Redis presents a self-signed certificate."""
        if self.redis_url.startswith(("rediss://", "rediss+sentinel://")) and not self.tls_verify:
            return {"ssl_cert_reqs": "none"}
        return {}

    @property
    def replica_ack_timeout(self) -> float:
        return min(MAX_REPLICA_ACK_TIMEOUT_S, self.election.renew_interval / 2)

    def redis_client(self, role: str, **kwargs) -> redis.Redis:
        """A redis-py client (either URL form: election/connection.py) whose
        connections name themselves baton:<site>:<role>."""
        return client(self.redis_url, client_name=f"baton:{self.identity.site}:{role}", **self.redis_kwargs(),
                      **kwargs)

    def shared_redis_client(self, role: str, turn_wait_s: float) -> redis.Redis:
        """Like :meth:`redis_client`, but one connection that the threads of
        ``role`` take in turns, each waiting up to ``turn_wait_s``."""
        return self.redis_client(role, max_connections=1, turn_wait_s=turn_wait_s)

    def refuse_cluster(self) -> None:
        """Raise ConfigError if REDIS_URL is a Redis Cluster endpoint: RQ does
        not support Cluster, and its multi-key commands (and Baton's scripts)
        would fail later with CROSSSLOT. One INFO at start; a Redis that does
        not answer now is not judged (the site starts and waits for it)."""
        probe = self.redis_client("start", socket_timeout=CLUSTER_PROBE_TIMEOUT_S,
                                  socket_connect_timeout=CLUSTER_PROBE_TIMEOUT_S)
        try:
            enabled = probe.info("cluster").get("cluster_enabled")
        except redis.RedisError:
            return
        finally:
            probe.close()
        if str(enabled) == "1":
            raise ConfigError(CLUSTER_REFUSED)

    def lease(self) -> Lease:
        """The elector's lease: its own connection, the replicas it waits for,
        and readiness required: a site competes only while one of its workers
        can run a job (workers/worker.py marks it)."""
        return Lease.from_url(self.redis_url, self.identity, self.election.ttl_ms, prefix=self.prefix,
                              replicas_ack=self.replicas_ack, replica_ack_timeout=self.replica_ack_timeout,
                              require_ready=True, **self.redis_kwargs())
