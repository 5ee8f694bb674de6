"""A replicated Redis watched by Sentinel, on loopback, for tests that kill or
partition the primary while Baton sites lead.

    with SentinelDeployment() as d:          # primary + replica + 3 sentinels
        url = d.url()                        # redis+sentinel://127.0.0.1:p1,...,127.0.0.1:p3/baton/0
        d.partition_primary(spare="baton:a:")  # site A stays with the old primary
        d.wait_for_new_primary(old)          # the sentinels promote the replica
        d.heal()
        d.wait_for_replica(old)              # the sentinels demote the old primary

Topology (``proxied=True``, the default): each node (a RedisServer) sits
behind its own TcpProxy, and everyone else reaches it only through that proxy:
the sentinels monitor the proxy's port, the replica replicates through the
primary's proxy, and each node announces its proxy's port
(``replica-announce-port``), so the sentinels know every node, and tell every
client, by its proxy's address. Cutting a node's proxy therefore cuts it off
from the sentinels, from the other node and from every client (sentinel-managed
or not), while ``server.client()`` still reaches it directly. With
``proxied=False`` everything talks to the nodes' own ports.

The sentinels talk to each other directly. Clients reach them directly too,
unless ``proxied_sentinels=True``: then each sentinel has a proxy in front of
it for clients (`sentinel_addresses` and `url()` name those), and
`partition_primary(spare=M)` also cuts, at those proxies, the connections that
name M, so that site A (on the old primary's side) cannot ask the sentinels
either. That needs A's Sentinel client to name its connections too
(redis-py: ``sentinel_kwargs={"client_name": "baton:a:sentinel"}``; by
default redis-py passes only the socket_* options to sentinel connections).
Without it a spared site that needs a new connection asks the sentinels: before
the failover they report the primary as down (redis-py: MasterNotFoundError),
after it they name the new primary, and the site quietly crosses the partition.

Timings. ``down_after_ms`` (1000) and ``failover_timeout_ms`` (3000) are
the per-master settings. Sentinel's internal periods, which its config file
cannot set, are lowered at start with SENTINEL DEBUG (``internals``, default
FAST_INTERNALS; Redis 7 and Valkey both have it):

* ping-period 200 ms (Sentinel: 1000; it pings every min(this, down-after)).
  With down-after 1000 and a 1000 ms ping period, a link Sentinel has just
  made is flagged +sdown for a moment about 1 s later (the first PING goes out
  in the same tick that finds it overdue); right after a failover all the
  sentinels make new links to the new primary at once, agree it is down, and
  may fail over again, back to a replica that was just restarted. Keep
  down_after_ms above the ping period.
* info-period 1000 ms (Sentinel: 10 s for a healthy replica): how soon the
  sentinels see a replica's link come up, or a node's role change.
* publish-period 500 ms (Sentinel: 2 s): hello messages; and a node that the
  sentinels list as a replica but that claims to be a master (an old primary
  after a heal, a restart as master, or the still-running primary after a
  manual failover) is turned into a replica (+convert-to-slave) once it has
  been up and claiming so for 4 publish periods. With Sentinel's own periods
  that old primary stays a writable master for 8 to 18 s; with these, for
  about 2 to 3 s. `wait_for_replica` waits for it.
* ask-period 200 ms (Sentinel: 1000): how often a sentinel that finds the
  primary down asks the others whether they agree (+odown).

Pass ``internals={}`` for Sentinel's own periods (production-like; slower).
A failover that aborts (no good replica in some sentinel's view, or a split
vote) is retried only after 2 x failover-timeout (6 s here).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time

import redis
from redis.sentinel import Sentinel

from tests.support.redis_server import RedisServer, free_port
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

HOST = "127.0.0.1"
SERVICE = "baton"

# Sentinel's internal periods, lowered at start with SENTINEL DEBUG (Redis 7+,
# Valkey): see SentinelDeployment's docstring.
FAST_INTERNALS = {"ping-period": 200, "ask-period": 200, "info-period": 1000, "publish-period": 500}


class _SentinelProcess:
    def __init__(self, executable: str, port: int, myid: str):
        self.executable = executable
        self.port = port
        self.myid = myid
        self.dir = tempfile.mkdtemp(prefix="baton-sentinel-")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        self.process: subprocess.Popen | None = None

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "sentinel.log")

    def start(self, lines: list[str]) -> None:
        with open(self.conf, "w") as f:
            f.write("\n".join([
                f"port {self.port}", f"bind {HOST}", "daemonize no", f"dir {self.dir}",
                f"logfile {self.log}", f"sentinel myid {self.myid}", *lines,
            ]) + "\n")
        self.process = subprocess.Popen(
            [self.executable, self.conf, "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 2)
        kwargs.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelDeployment:
    """One primary, one replica and three sentinels (service "baton", quorum 2),
    on free loopback ports. `start()` returns once all of it is up, the replica
    in sync and every sentinel sees the primary, the replica and the two other
    sentinels. Use as a context manager, or call `stop()`."""

    def __init__(
        self,
        *,
        proxied: bool = True,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        quorum: int = 2,
        sentinels: int = 3,
        service: str = SERVICE,
        executable: str | None = None,
        internals: dict | None = FAST_INTERNALS,
        proxied_sentinels: bool = False,
    ):
        self.proxied = proxied
        self.proxied_sentinels = proxied_sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.quorum = quorum
        self.service = service
        self.internals = dict(internals or {})
        ping_period = min(int(self.internals.get("ping-period", 1000)), 1000)
        if down_after_ms <= ping_period:
            raise ValueError(f"down_after_ms ({down_after_ms}) must exceed Sentinel's ping period ({ping_period} ms): "
                             "otherwise new links look down for a moment and cause spurious failovers")
        self.servers: list[RedisServer] = []
        self._proxies: dict[int, TcpProxy] = {}  # real port -> its proxy
        self._sentinels: list[_SentinelProcess] = []
        self._sentinel_proxies: list[TcpProxy] = []  # clients' way to each sentinel (proxied_sentinels)
        self._managers: list[Sentinel] = []  # redis-py Sentinel objects made by master_for, closed by stop()
        self._sentinel_count = sentinels
        self._executable = executable
        self._clients: list[redis.Redis] = []
        self._asking: dict[int, redis.Redis] = {}  # sentinel index -> the client this class asks it with
        self.killed: RedisServer | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "SentinelDeployment":
        deadline = time.monotonic() + timeout
        try:
            primary = self._new_server()
            replica = self._new_server()
            self._start_node(primary, replicaof=None)
            self._start_node(replica, replicaof=primary)
            self.wait_replicas_synced(timeout=max(deadline - time.monotonic(), 0.1))

            executable = primary.executable
            ports = [free_port() for _ in range(self._sentinel_count)]
            self._sentinels = [_SentinelProcess(executable, port, secrets.token_hex(20)) for port in ports]
            host, port = self.address_of(primary)
            for s in self._sentinels:
                # Introduce everyone up front (as a sentinel's rewritten config
                # would after discovery), so no one waits for hello messages.
                lines = [
                    "sentinel resolve-hostnames no",
                    f"sentinel monitor {self.service} {host} {port} {self.quorum}",
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {self.service} 1",
                    "sentinel known-replica {} {} {}".format(self.service, *self.address_of(replica)),
                ]
                lines += [f"sentinel known-sentinel {self.service} {HOST} {o.port} {o.myid}"
                          for o in self._sentinels if o is not s]
                s.start(lines)
            for i, s in enumerate(self._sentinels):
                self._wait(lambda: _answers(s), deadline, f"sentinel {s.port} to start")
                if self.internals:
                    args = [str(x) for item in self.internals.items() for x in item]
                    self._ask(i, "SENTINEL", "DEBUG", *args)
            if self.proxied_sentinels:
                self._sentinel_proxies = [TcpProxy(s.port).start() for s in self._sentinels]
            self._wait(lambda: self._sentinels_see(primary, [replica]), deadline, "the sentinels to see everyone")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the sentinels first (so nothing fails over meanwhile), then the
        proxies and the nodes; remove every temporary directory."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._asking.clear()
        for manager in self._managers:
            manager.close()
        self._managers.clear()
        for s in self._sentinels:
            s.stop()
        for proxy in [*self._sentinel_proxies, *self._proxies.values()]:
            proxy.close()
        for server in self.servers:
            server.stop()

    def __enter__(self) -> "SentinelDeployment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """Where clients reach the sentinels (their proxies with proxied_sentinels)."""
        if self._sentinel_proxies:
            return [(HOST, p.port) for p in self._sentinel_proxies]
        return [(HOST, s.port) for s in self._sentinels]

    @property
    def sentinel_proxies(self) -> list[TcpProxy]:
        """The proxies in front of the sentinels (empty unless proxied_sentinels)."""
        return list(self._sentinel_proxies)

    def url(self, scheme: str = "redis+sentinel", db: int = 0) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"{scheme}://{hosts}/{self.service}/{db}"

    def address_of(self, server: RedisServer) -> tuple[str, int]:
        """Where the others reach this node (its proxy when proxied), as the sentinels report it."""
        proxy = self._proxies.get(server.port)
        return (HOST, proxy.port if proxy else server.port)

    def proxy(self, server: RedisServer) -> TcpProxy:
        """The proxy in front of this node (proxied deployments only)."""
        if not self.proxied:
            raise RuntimeError("a direct deployment (proxied=False) has no proxies")
        return self._proxies[server.port]

    def server_at(self, port: int) -> RedisServer:
        """The node whose own port, or whose proxy's port, this is."""
        for server in self.servers:
            if port in (server.port, self.address_of(server)[1]):
                return server
        raise KeyError(f"no node of this deployment at port {port}")

    # -- clients ---------------------------------------------------------------

    def sentinel_client(self, index: int = 0, **kwargs) -> redis.Redis:
        """A direct client of one sentinel (never through a proxy; closed by stop())."""
        client = self._sentinels[index].client(**kwargs)
        self._clients.append(client)
        return client

    def sentinel(self, **connection_kwargs) -> Sentinel:
        """redis-py's Sentinel over all three sentinels (socket_* options also
        apply to the sentinel connections, as redis-py does)."""
        return Sentinel(self.sentinel_addresses, **connection_kwargs)

    def master_for(self, sentinel_kwargs: dict | None = None, **kwargs) -> redis.Redis:
        """A sentinel-managed client of the primary (decode_responses and 2 s
        socket timeouts by default, for the sentinels too; `sentinel_kwargs`
        adds to those, e.g. a client_name). The caller closes the client; the
        Sentinel object behind it is closed by stop()."""
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 2)
        kwargs.setdefault("socket_connect_timeout", 2)
        options = {"socket_timeout": 2, "socket_connect_timeout": 2, **(sentinel_kwargs or {})}
        manager = Sentinel(self.sentinel_addresses, sentinel_kwargs=options)
        self._managers.append(manager)
        return manager.master_for(self.service, **kwargs)

    # -- who is what ---------------------------------------------------------

    def primary_address(self, index: int | None = None) -> tuple[str, int]:
        """The primary's address per the sentinels (SENTINEL GET-MASTER-ADDR-BY-NAME):
        the first that answers, or sentinel `index`."""
        order = range(len(self._sentinels)) if index is None else [index]
        errors = []
        for i in order:
            try:
                reply = self._ask(i, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except redis.RedisError as exc:
                errors.append(exc)
                continue
            if reply:
                return reply[0], int(reply[1])
        raise RuntimeError(f"no sentinel named a primary for {self.service!r}: {errors}")

    def primary(self) -> RedisServer:
        """The node that is primary according to the sentinels."""
        return self.server_at(self.primary_address()[1])

    def replica(self) -> RedisServer:
        """The other node (alive or not)."""
        primary = self.primary()
        return next(s for s in self.servers if s is not primary)

    def role(self, server: RedisServer) -> str:
        """What the node says it is ("master" or "slave"), asked directly."""
        client = server.client(socket_timeout=2)
        try:
            return client.info("replication")["role"]
        finally:
            client.close()

    # -- faults ------------------------------------------------------------------

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary (nothing is saved); returns it. Its proxy, if any,
        stays up and resets every connection, as a closed port would."""
        server = self.primary()
        server.kill()
        self.killed = server
        return server

    def partition_primary(self, spare=None) -> TcpProxy:
        """Cut the primary off from the sentinels, the replica and every client
        except those whose connections name `spare` (e.g. "baton:a:": site A is
        on the primary's side); with proxied_sentinels, also cut the clients
        that name `spare` off from the sentinels. Returns the primary's proxy;
        `heal()` ends it."""
        proxy = self.proxy(self.primary())
        proxy.blackhole(spare=spare)
        if spare is not None:
            for sentinel_proxy in self._sentinel_proxies:
                sentinel_proxy.blackhole(only=spare)
        return proxy

    def heal(self) -> None:
        """Every proxy forwards again (see TcpProxy.heal: connections cut
        meanwhile are reset, spared ones stay)."""
        for proxy in [*self._proxies.values(), *self._sentinel_proxies]:
            proxy.heal()

    def failover(self, timeout: float = 20.0) -> float:
        """SENTINEL FAILOVER, then wait until every sentinel names the other
        node; returns the seconds that took. The old primary is demoted later
        (see `wait_for_replica`)."""
        old = self.primary()
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                self._ask(0, "SENTINEL", "FAILOVER", self.service)
                break
            except redis.ResponseError as exc:  # NOGOODSLAVE / INPROG: the sentinel is not ready yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SENTINEL FAILOVER kept failing: {exc}") from exc
                time.sleep(0.1)
        self.wait_for_new_primary(old, timeout=max(deadline - time.monotonic(), 0.1))
        return time.monotonic() - started

    def wait_for_new_primary(self, old, timeout: float = 20.0) -> float:
        """Wait until every sentinel names the same primary, and not `old` (a
        RedisServer, or its port or its proxy's port); returns the seconds waited."""
        old_server = old if isinstance(old, RedisServer) else self.server_at(int(old))
        started = time.monotonic()

        def switched():
            try:
                ports = {self.primary_address(i)[1] for i in range(len(self._sentinels))}
            except RuntimeError:
                return False
            return len(ports) == 1 and self.server_at(ports.pop()) is not old_server

        self._wait(switched, started + timeout, "the sentinels to name a new primary")
        return time.monotonic() - started

    def wait_replicas_synced(self, timeout: float = 20.0) -> None:
        """Wait until every live node but the primary (the sentinels' primary;
        before they run, the first node) replicates from it with its link up
        and the same replication offset, and every sentinel sees it so: not
        down, its link ok (a replica the sentinels would promote; right after a
        restart they may still think it down, and a failover then aborts with
        -failover-abort-no-good-slave and waits 2 x failover-timeout)."""
        def synced():
            primary = self.primary() if self._sentinels else self.servers[0]
            replicas = [s for s in self.servers if s is not primary and _alive(s)]
            if not all(self._synced(r, primary) for r in replicas):
                return False
            return not self._sentinels or self._sentinels_see(primary, replicas)

        self._wait(synced, time.monotonic() + timeout, "the replicas to sync and the sentinels to see them")

    def wait_for_replica(self, server: RedisServer, timeout: float = 30.0) -> float:
        """Wait until `server` replicates from the sentinels' primary with its
        link up (e.g. an old primary after a heal or a manual failover, which
        the sentinels demote only a while after they see it again: see the
        module's docstring); returns the seconds waited."""
        started = time.monotonic()

        def following():
            primary = self.primary()
            return primary is not server and self._synced(server, primary, offsets=False)

        self._wait(following, started + timeout, f"node {server.port} to become a replica")
        return time.monotonic() - started

    def restart_killed(self, as_replica: bool = True, timeout: float = 10.0) -> RedisServer:
        """Start the killed node again, on the same port and empty: as a replica
        of the current primary, or (as_replica=False) as the empty master a
        plain restart would bring back, which Sentinel later demotes."""
        server = self.killed
        if server is None:
            raise RuntimeError("no node was killed")
        self._start_node(server, replicaof=self.primary() if as_replica else None, timeout=timeout)
        self.killed = None
        return server

    def restart_killed_as_replica(self, timeout: float = 10.0) -> RedisServer:
        return self.restart_killed(as_replica=True, timeout=timeout)

    # -- internals -------------------------------------------------------------

    def _new_server(self) -> RedisServer:
        server = RedisServer(executable=self._executable)
        self.servers.append(server)
        if self.proxied:
            self._proxies[server.port] = TcpProxy(server.port).start()
        return server

    def _start_node(self, server: RedisServer, replicaof: RedisServer | None, timeout: float = 10.0) -> None:
        args = [
            "--replica-announce-ip", HOST, "--replica-announce-port", str(self.address_of(server)[1]),
            "--repl-diskless-sync-delay", "0",  # Redis 7 waits 5 s for more replicas before a full sync
        ]
        if replicaof is not None:
            args += ["--replicaof", *map(str, self.address_of(replicaof))]
        server.extra_args = args
        server.start(timeout=timeout)

    def _ask(self, index: int, *command):
        client = self._asking.get(index)
        if client is None:
            client = self._asking[index] = self.sentinel_client(index)
        return client.execute_command(*command)

    def _synced(self, replica: RedisServer, primary: RedisServer, offsets: bool = True) -> bool:
        try:
            mine = _info(replica)
            theirs = _info(primary)
        except redis.RedisError:
            return False
        if mine.get("role") != "slave" or mine.get("master_link_status") != "up":
            return False
        if int(mine.get("master_port", 0)) != self.address_of(primary)[1]:
            return False
        return not offsets or mine.get("slave_repl_offset") == theirs.get("master_repl_offset")

    def _sentinels_see(self, primary: RedisServer, replicas: list[RedisServer]) -> bool:
        """Every sentinel: the primary up, the other sentinels known, each of
        `replicas` up, replicating from the primary, its link ok."""
        want_primary = self.address_of(primary)
        for i in range(len(self._sentinels)):
            try:
                master = _pairs(self._ask(i, "SENTINEL", "MASTER", self.service))
                seen = {(r["ip"], int(r["port"])): r for r in map(_pairs, self._ask(i, "SENTINEL", "REPLICAS", self.service))}
            except redis.RedisError:
                return False
            if master.get("flags") != "master" or (master.get("ip"), int(master.get("port", 0))) != want_primary:
                return False
            if int(master.get("num-other-sentinels", 0)) != len(self._sentinels) - 1:
                return False
            for replica in replicas:
                r = seen.get(self.address_of(replica))
                if not r or r.get("flags") != "slave" or r.get("master-link-status") != "ok":
                    return False
                if int(r.get("master-port", 0)) != want_primary[1]:
                    return False
        return True

    @staticmethod
    def _wait(predicate, deadline: float, what: str):
        return wait_until(predicate, timeout=max(deadline - time.monotonic(), 0.0), interval=0.02, what=what)


def _answers(s: _SentinelProcess) -> bool:
    if s.process.poll() is not None:
        raise RuntimeError(f"sentinel on port {s.port} exited with {s.process.returncode} (see {s.log})")
    client = s.client()
    try:
        return client.ping()
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _alive(server: RedisServer) -> bool:
    return server.process is not None and server.process.poll() is None


def _info(server: RedisServer) -> dict:
    client = server.client(socket_timeout=2, socket_connect_timeout=2)
    try:
        return client.info("replication")
    finally:
        client.close()


def _pairs(reply) -> dict:
    """A sentinel's flat [key, value, ...] reply as a dict (redis-py parses only some)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))
