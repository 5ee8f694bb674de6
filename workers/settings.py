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

from election import ElectionConfig, Identity

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


_URL_FORM = "redis://[:password@]host:port[/db] (or rediss:// for TLS)"


def _check_redis_url(name: str, url: str) -> None:
    """Everything redis-py would only trip over at the first connection, as
    one line that never shows the password."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name} must start with redis://, rediss:// or unix://")
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

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        url = env.get("REDIS_URL") or env.get("REDIS_TLS_URL")
        if not url:
            raise ConfigError("REDIS_URL must be set to redis://[:password@]host:port[/db] (or rediss:// for TLS)")
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
        return cls(url, prefix, zone, module, identity, election, verify == "required", grace)

    def redis_kwargs(self) -> dict:
        """Extra redis-py options: Heroku's Redis presents a self-signed certificate."""
        if self.redis_url.startswith("rediss://") and not self.tls_verify:
            return {"ssl_cert_reqs": "none"}
        return {}

    def redis_client(self, role: str, **kwargs) -> redis.Redis:
        """A redis-py client whose connections name themselves baton:<site>:<role>."""
        return redis.Redis.from_url(
            self.redis_url, client_name=f"baton:{self.identity.site}:{role}", **self.redis_kwargs(), **kwargs
        )
