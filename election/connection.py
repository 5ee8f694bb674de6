"""Connections to Redis, from the one URL every Baton process is given.

Two forms:

- ``redis://[[user]:password@]host:port[/db]`` (``rediss://`` for TLS,
  ``unix://``): redis-py's own, to one server;
- ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/<service>[/db]``
  (``rediss+sentinel://`` for TLS to the sentinels and the primary): the
  form other Python projects (kombu, Django's redis caches) have adopted.
  Every connection asks the sentinels, when it connects, which server is the
  primary of ``<service>`` now, so after a failover each one follows the new
  primary on its next reconnect (a connection still open to a demoted
  primary gets READONLY on its next write, which redis-py turns into a
  reconnect). The user and password are the data servers'; sentinels that
  require their own are given ``?sentinel_password=`` (and
  ``sentinel_username=``). Other query options (``socket_timeout`` ...) are
  redis-py's, for the data connections.

Every connection names itself (``CLIENT SETNAME baton:<site>:<role>``) so
``redis-cli CLIENT LIST`` shows who is there. Some managed proxies refuse
CLIENT SETNAME: the name is then dropped for that pool, said once in the
log, and the connection carries on — a name is for people, never needed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, ResponseError
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from .logfmt import log_event

log = logging.getLogger("baton.redis")

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_URL_FORM = "redis+sentinel://[user:password@]host1:26379,host2:26379/<service>[/db]"
DEFAULT_SENTINEL_PORT = 26379

# Options that concern the sentinels rather than the data servers.
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL (see the module docstring)."""

    sentinels: tuple  # ((host, port), ...)
    service: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    options: dict = field(default_factory=dict)  # redis-py's, typed, for the data connections

    @classmethod
    def parse(cls, url: str) -> "SentinelURL":
        """Raises ValueError with one line saying what is wrong and the form."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SENTINEL_SCHEMES:
            raise ValueError(f"must start with redis+sentinel:// or rediss+sentinel:// ({SENTINEL_URL_FORM})")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        username = password = None
        if userinfo:
            user, has_password, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if has_password else None
        sentinels = []
        for item in hostlist.split(","):
            host, port = _host_port(item.strip())
            sentinels.append((host, port))
        path = [piece for piece in parts.path.split("/") if piece]
        if not path:
            raise ValueError(f"must name the Sentinel service after the hosts ({SENTINEL_URL_FORM})")
        if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(f"must end in /<service> or /<service>/<db number> ({SENTINEL_URL_FORM}); "
                             f"got {parts.path!r}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        sentinel_auth = {name: query.pop(name) or None for name in _SENTINEL_QUERY if name in query}
        try:
            # redis-py's own parser types its query options (socket_timeout=2.5 ...).
            options = parse_url(f"redis://localhost/?{urlencode(query)}") if query else {}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"has an option redis-py refuses: {exc}") from None
        for name in ("host", "port", "path", "db", "username", "password", "connection_class"):
            options.pop(name, None)
        return cls(tuple(sentinels), unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                   scheme == "rediss+sentinel", username, password, sentinel_auth.get("sentinel_username"),
                   sentinel_auth.get("sentinel_password"), options)


def _host_port(item: str) -> tuple:
    if not item:
        raise ValueError(f"must list at least one sentinel host:port ({SENTINEL_URL_FORM})")
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"must list sentinels as host:port ({SENTINEL_URL_FORM}); got {item!r}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"must give each sentinel a port from 1 to 65535 ({SENTINEL_URL_FORM}); got {item!r}")
    return host, int(port_text)


class ClientNaming:
    """Whether a pool's connections still send CLIENT SETNAME (shared by the
    pool's connections: once refused, no connection of the pool asks again)."""

    def __init__(self):
        self.refused = False

    def refuse(self, name: str, error: Exception) -> None:
        if not self.refused:
            self.refused = True
            log_event(log, logging.WARNING, "redis_client_name_refused", name=name,
                      error=f"{type(error).__name__}: {error}",
                      effect="connections of this kind stay unnamed in CLIENT LIST")


class _OptionalName:
    """CLIENT SETNAME sent after the rest of the handshake, its refusal
    tolerated (see the module docstring)."""

    def __init__(self, *args, naming: ClientNaming | None = None, **kwargs):
        self.naming = naming or ClientNaming()
        super().__init__(*args, **kwargs)

    def on_connect_check_health(self, check_health: bool = True):
        name, self.client_name = self.client_name, None
        try:
            super().on_connect_check_health(check_health)
        finally:
            self.client_name = name
        if name and not self.naming.refused:
            self.send_command("CLIENT", "SETNAME", name, check_health=False)
            try:
                self.read_response()
            except ResponseError as exc:
                self.naming.refuse(name, exc)


class NamedConnection(_OptionalName, redis.Connection):
    pass


class NamedSSLConnection(_OptionalName, SSLConnection):
    pass


class NamedUnixConnection(_OptionalName, UnixDomainSocketConnection):
    pass


class NamedSentinelConnection(_OptionalName, SentinelManagedConnection):
    pass


class NamedSentinelSSLConnection(_OptionalName, SentinelManagedSSLConnection):
    pass


class _WaitForTurn:
    """A pool that never opens more than ``max_connections``: a thread that
    finds them all in use waits for one (up to ``turn_wait_s``) instead of
    failing with redis-py's "Too many connections". With one connection,
    the threads of one role (the scheduler, the watchdog and the presence
    writer) take turns on it, so the role costs one connection of a small
    plan's budget even when two of them need Redis at the same moment."""

    # A release wakes one waiter; this poll covers a release that lands
    # between a waiter's failed try and its wait.
    RETRY_S = 0.05

    def __init__(self, *args, turn_wait_s: float, **kwargs):
        self.turn_wait_s = turn_wait_s
        super().__init__(*args, **kwargs)

    def reset(self):
        super().reset()
        self._released = threading.Condition()  # new after a fork, like the pool's own lock

    def get_connection(self, *args, **kwargs):
        deadline = time.monotonic() + self.turn_wait_s
        while True:
            try:
                return super().get_connection(*args, **kwargs)
            except MaxConnectionsError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RedisConnectionError(f"no connection of this pool came free within "
                                               f"{self.turn_wait_s:g} s") from None
                with self._released:
                    self._released.wait(min(left, self.RETRY_S))

    def release(self, connection):
        super().release(connection)
        with self._released:
            self._released.notify()


class TakingTurnsConnectionPool(_WaitForTurn, redis.ConnectionPool):
    pass


class TakingTurnsSentinelConnectionPool(_WaitForTurn, SentinelConnectionPool):
    pass


_NAMED = {redis.Connection: NamedConnection, SSLConnection: NamedSSLConnection,
          UnixDomainSocketConnection: NamedUnixConnection}


def connection_pool(url: str, turn_wait_s: float | None = None, **options) -> redis.ConnectionPool:
    """A pool for ``url`` (either form), its connections made with ``options``
    (redis-py's: client_name, socket_timeout, decode_responses ...). With
    ``turn_wait_s``, the pool keeps to ``max_connections`` by making threads
    wait their turn (:class:`_WaitForTurn`). No connection is opened here."""
    options["naming"] = ClientNaming()
    turns = {} if turn_wait_s is None else {"turn_wait_s": turn_wait_s}
    if not is_sentinel_url(url):
        pool_class = TakingTurnsConnectionPool if turns else redis.ConnectionPool
        pool = pool_class.from_url(url, **options, **turns)
        pool.connection_class = _NAMED.get(pool.connection_class, pool.connection_class)
        return pool
    target = SentinelURL.parse(url)
    data = {**target.options, **options, "db": target.db, "username": target.username,
            "password": target.password}
    # The sentinels get the data connections' timeouts and TLS settings, never
    # their name or decoding (redis-py parses Sentinel's replies itself).
    sentinel_options = {name: data[name] for name in ("socket_timeout", "socket_connect_timeout", "ssl_cert_reqs",
                                                      "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
                        if data.get(name) is not None}
    sentinel_options.setdefault("socket_timeout", 2.0)
    sentinel_options.setdefault("socket_connect_timeout", sentinel_options["socket_timeout"])
    if target.tls:
        sentinel_options["ssl"] = True
    if target.sentinel_password:
        sentinel_options.update(username=target.sentinel_username, password=target.sentinel_password)
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)
    data["connection_class"] = NamedSentinelSSLConnection if target.tls else NamedSentinelConnection
    pool_class = TakingTurnsSentinelConnectionPool if turns else SentinelConnectionPool
    return pool_class(target.service, manager, **data, **turns)


def client(url: str, **options) -> redis.Redis:
    """A redis-py client over :func:`connection_pool`."""
    return redis.Redis(connection_pool=connection_pool(url, **options))
