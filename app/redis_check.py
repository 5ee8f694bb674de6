"""``python -m app check --redis``: can this dyno use the configured Redis?

Heroku's release phase runs it before any dyno restarts, so a Redis the new
release cannot use — nothing listening, a wrong password, TLS on one side
only, a certificate it will not accept, a server too old for RQ — fails the
release with one line instead of a crash-looping dyno. It also reports what
decides how much Baton can keep there: ``maxmemory`` and its policy.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError, TimeoutError

from election import LeaseCorrupt, read_lease
from election.connection import SentinelURL, is_sentinel_url
from workers.settings import CLUSTER_REFUSED, Settings

# Every call of the check gets this long: a release phase must not hang.
CHECK_TIMEOUT_S = 5.0

# RQ 3 moves jobs with LMOVE/BLMOVE (Redis 6.2); Baton's scripts need nothing newer.
MIN_VERSION = (6, 2)

# Above this share of maxmemory, a noeviction Redis is close to refusing writes.
MEMORY_WARN_SHARE = 0.8


class RedisCheckFailed(Exception):
    """One line: what is wrong with the configured Redis, and the fix."""


def _explain(exc: RedisError, url: str, tls_verify: bool) -> str:
    """The likely cause of a connection failure, in the user's terms."""
    parts = urlsplit(url)
    if is_sentinel_url(url):
        target = SentinelURL.parse(url)
        where = (f"Sentinel service {target.service!r} (sentinels "
                 f"{','.join(f'{host}:{port}' for host, port in target.sentinels)})")
    else:
        where = f"{parts.hostname}:{parts.port or 6379}"
    text = str(exc)
    tls = parts.scheme in ("rediss", "rediss+sentinel")
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        if parts.password is None:
            return f"REDIS_URL: {where} requires a password: {parts.scheme}://:<password>@{where}"
        return f"REDIS_URL: {where} refused the password in the URL (AUTH failed)"
    if "certificate verify failed" in text:
        hint = ("set BATON_REDIS_TLS_VERIFY=none to accept a self-signed certificate (Heroku's)"
                if tls_verify else "the certificate was refused")
        return f"REDIS_URL: the TLS certificate of {where} is not trusted: {hint}"
    if tls and ("wrong version number" in text or "record layer failure" in text or "unexpected eof" in text.lower()):
        return f"REDIS_URL: {where} does not speak TLS: use redis:// instead of rediss://"
    if not tls and isinstance(exc, (TimeoutError, ConnectionError)) and (
            "Connection closed by server" in text or "Connection reset" in text or isinstance(exc, TimeoutError)):
        return (f"REDIS_URL: {where} did not answer a plain-TCP client ({type(exc).__name__}): if it requires TLS, "
                "as Heroku's Key-Value Store does, use the rediss:// URL (REDIS_TLS_URL)")
    if "Connection refused" in text or "Errno 111" in text:
        return f"REDIS_URL: nothing is listening at {where} (connection refused)"
    if isinstance(exc, TimeoutError):
        hint = ": if it speaks plain TCP, use redis:// instead of rediss://" if tls else ""
        return f"REDIS_URL: {where} did not answer within {CHECK_TIMEOUT_S:g} s{hint}"
    return f"REDIS_URL: cannot use {where}: {type(exc).__name__}: {text}"


def _version(info: dict) -> tuple:
    raw = str(info.get("valkey_version") or info.get("redis_version") or "0")
    return tuple(int(p) for p in raw.split(".")[:3] if p.isdigit())


def check_redis(settings: Settings) -> dict:
    """Connect and look. Returns the facts (for one logfmt line) and a list
    of warnings; raises RedisCheckFailed when this Redis cannot be used."""
    client = settings.redis_client("release", socket_timeout=CHECK_TIMEOUT_S,
                                   socket_connect_timeout=CHECK_TIMEOUT_S, decode_responses=True)
    try:
        try:
            client.ping()
            info = client.info()  # its default sections: server, memory, replication, cluster and more
        except RedisError as exc:
            raise RedisCheckFailed(_explain(exc, settings.redis_url, settings.tls_verify)) from None
        kind = "valkey" if "valkey_version" in info else "redis"
        version = _version(info)
        if version < MIN_VERSION:
            raise RedisCheckFailed(
                f"REDIS_URL: {kind} {'.'.join(map(str, version))} is too old: RQ needs Redis "
                f"{'.'.join(map(str, MIN_VERSION))} or newer")
        if str(info.get("cluster_enabled")) == "1":
            raise RedisCheckFailed(CLUSTER_REFUSED)
        maxmemory, policy = int(info.get("maxmemory", 0)), info.get("maxmemory_policy", "unknown")
        used = int(info.get("used_memory", 0))
        warnings = []
        if policy != "noeviction":
            warnings.append(f"maxmemory-policy is {policy}: Redis may evict Baton's keys (the lease and the run "
                            "claims carry TTLs, which volatile-* policies evict first): use noeviction")
        if maxmemory and used > MEMORY_WARN_SHARE * maxmemory:
            warnings.append(f"Redis is {used * 100 // maxmemory} % full ({used} of {maxmemory} bytes): with "
                            "noeviction, writes fail when it is full and ticks stop being enqueued")
        try:
            lease = read_lease(client, settings.prefix)
            leader = f"{lease.site} (token {lease.token})" if lease else "nobody"
        except LeaseCorrupt as exc:
            leader = "unknown"
            warnings.append(f"{exc.key}: {exc.problem} ({exc.fix})")
        except ResponseError as exc:  # a proxy that refuses EVAL
            leader = "unknown"
            warnings.append(f"the server refused a Lua script ({exc}): Baton's lease needs EVAL")
        replicas = int(info.get("connected_slaves", 0))
        if settings.replicas_ack > replicas:
            warnings.append(f"BATON_REDIS_REPLICAS_ACK={settings.replicas_ack} but the primary has {replicas} "
                            "replica(s) connected: no term can start and no tick can run until enough are back")
        facts = {"server": kind, "version": ".".join(map(str, version)),
                 "tls": settings.redis_url.startswith(("rediss://", "rediss+sentinel://")),
                 "replicas": replicas, "replicas_ack": settings.replicas_ack,
                 "maxmemory": maxmemory or "none", "maxmemory_policy": policy, "used_memory": used, "leader": leader}
        return {"facts": facts, "warnings": warnings}
    finally:
        client.close()
