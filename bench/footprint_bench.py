"""A whole site's Redis footprint, measured on real gunicorn sites (WebSite:
the gunicorn master with its elector and scheduler threads, WEB_CONCURRENCY=2
HTTP workers, the embedded RQ worker and its work horse), at the production
election timings (ElectionConfig's defaults: ttl 10 s, renew every 2 s,
deadline 7 s — the tests' fast timings are overridden). The targets: an
idle site costs <= 2 Redis commands/s as a follower and <= 1 + 2 per worker
as the leader, every process included (issue 15 made every worker mark its
site ready each second: one command a second for a waiting worker, two for a
leading one — its mark, which also says its site still leads, and its
one-second BLMOVE; before that the targets were 1 and 2); HTTP workers reuse their connections; two
dynos of a site during a restart overlap, with the other site, hold <= 19
connections (Heroku's Mini plan allows 20; one is left for redis-cli).

**How a connection is attributed.** Every client of the Redis server is
mapped to a *dyno* and a *role*:

- the role comes from the connection's name, ``baton:<site>:<role>`` (the
  code's own roles: elector, scheduler, worker, web, and worker-feed if the
  worker's election feed names itself so), learnt from CLIENT LIST (re-read
  every second, every 50 ms in the overlap) and, for connections too
  short-lived for that, from the ``CLIENT SETNAME`` MONITOR shows as they
  connect. Refinements: a ``worker`` connection holding a subscription
  (CLIENT LIST ``sub``/``psub`` > 0) is ``worker-pubsub``; one owned by
  RQ's work horse (it inherits the worker's name) is ``horse``; the one RQ
  renames after the RQ worker (``<prefix>-<site>-...``, RQ's
  ``Worker._set_ip_address``), which ends up holding RQ's own command
  channel subscription, is ``worker-rq-pubsub`` (``worker-rq-named`` when
  not subscribed);
- the dyno comes from the process holding the client end of the socket
  (Linux /proc: the socket's inode in /proc/net/tcp, the pid whose fd points
  at it, the dyno tag in that pid's environment — platform.Dyno). A
  connection with no name is attributed this way too and counted under
  ``unnamed-<process kind>`` (master, http, worker, horse); one neither
  named nor found in a dyno's processes is reported as ``unattributed``.
  When /proc no longer shows the socket (the process has exited — a horse's
  connections live ~20 ms), the name's site stands in for the dyno: in the
  overlap, such a connection of the new "a" dyno is counted under "a".
- The benchmark's own connections (MONITOR, CLIENT LIST) are named
  ``bench:*`` and are left out of every figure.

**Commands** are counted with MONITOR (bench/monitor.py): every command a
client sends, a round trip's worth (each command of a pipeline or MULTI
counts; commands a Lua script runs inside the server do not; the connection
handshake — HELLO, CLIENT SETNAME — does). Per role they are listed by name
(``evalsha`` carries the script's name, e.g. ``evalsha:renew``) and, in
``by_key``, by name and first key with the prefix shown as ``{p}`` and
numbers as ``*``.

``idle_cost_per_site`` — two sites, "a" and "b", with an empty schedule.
Once one leads and the other's worker has logged worker_waiting_for_lease,
and 3 s more, MONITOR counts for ``seconds`` while nothing talks to either
site (no HTTP request; keep-awake is off unless KEEP_AWAKE_URL is set).
Per site: its role (leader/follower), ``commands_per_s`` (all its
connections), ``by_role`` (commands/s of each role), ``commands`` (the
count of each command per role over the window), and ``target`` and
``meets_target``. Then a second window of ``status_seconds``: GET /status on
each site every ``status_every`` s, as the dashboard polls. Per site:
``requests``, ``web_commands`` (all commands of its web connections),
``web_commands_per_request``, ``web_handshake_commands`` (HELLO/CLIENT
SETNAME/SETINFO, i.e. new connections), ``web_connections_seen`` (distinct
``baton:<site>:web`` connections seen during the window, from MONITOR and
CLIENT LIST; reuse keeps it <= WEB_CONCURRENCY, not one per request),
``web_connections_end`` (CLIENT LIST ``age``/``idle`` in s of each at the
end: an age near the window's length means the connection lived through
every request), and the other roles' commands/s during that window.

``connections_in_restart_overlap`` — "a" leads, "b" follows, with a 1 s
schedule entry (a work horse comes and goes every second). A thread reads
CLIENT LIST every 50 ms and counts every connection but the benchmark's,
total and per dyno/role. The sequence, each step a ``phase``: ``before``
(steady state, after one GET /status on each site so the HTTP worker
that served it holds its connection; ``steady_seconds`` long), ``new_dyno_boot`` (a
second dyno of site "a" — same name and prefix, as a Heroku restart starts
the new dyno while the old one is still stopping — up to its ``boot`` line
plus 2 s, then one GET /status on it), ``old_dyno_stop`` (a dyno stop of
the old "a": SIGTERM to each of its processes, handoff, exit; until its
processes are gone), ``takeover`` (until the new leader's ticks are
recorded in ``{prefix}:test:executions``), ``after`` (steady state again,
``steady_seconds``). Reported: ``peak`` (the most connections seen at once,
when, in which phase, and the per dyno/role breakdown at that sample),
``peak_fits`` (peak <= 19), ``steady_before``/``steady_after`` (min, median,
max of the totals and the breakdown of the last sample of the phase),
``peak_per_phase``, who led before and after, and the old dyno's
StopReport. The total is a lower bound: a connection that opens and closes
between two samples (a horse's, say) is not seen. With ``every_http_worker``
the single GET /status is followed by pairs of concurrent ones until each
of the dyno's WEB_CONCURRENCY HTTP workers holds its connection (as on a
site whose dashboard has been open a while); ``web_connections_after_status``
says how many each dyno held. ``main()`` runs both variants.

``BENCH_FOOTPRINT_IDLE_SECONDS`` (default 60) sets the idle window of
``main()``; the whole run takes about 2.5 minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import threading
import time
from collections import Counter, defaultdict
from urllib.parse import urlsplit

import redis

from bench.monitor import CommandMonitor
from election import ElectionConfig
from tests.support.jobs import recorded_runs
from tests.support.lease import leader_site
from tests.support.platform import TAG, cmdline
from tests.support.waiting import wait_until
from tests.support.web import WebSite
from workers.settings import DEFAULT_WORKER_CONCURRENCY

_DEFAULTS = ElectionConfig()
# The production timings (the tests' FAST_ENV overridden back to them).
PRODUCTION_ENV = {"BATON_LEASE_TTL": f"{_DEFAULTS.ttl:g}", "BATON_RENEW_INTERVAL": f"{_DEFAULTS.renew_interval:g}",
                  "BATON_RENEW_DEADLINE": f"{_DEFAULTS.renew_deadline:g}"}
EMPTY_SCHEDULE = "tests.support.schedule_empty"
ONE_SECOND_SCHEDULE = "tests.support.schedule_1s"
WEB_CONCURRENCY = 2  # what WebSite sets
# Commands/s for a whole idle site (see the module docstring): the elector's
# (~0.5), plus a readiness mark a second from the worker that waits, or
# a mark and a BLMOVE a second from each of the leader's
# DEFAULT_WORKER_CONCURRENCY workers.
TARGETS = {"leader": 1.0 + 2.0 * DEFAULT_WORKER_CONCURRENCY, "follower": 2.0}
MAX_CONNECTIONS = 19  # Heroku Mini: 20, less one for redis-cli
BENCH_NAME = "bench:"
READY_MARKER = "bench-footprint-monitor-ready"

_HANDSHAKE = {"hello", "client|setname", "client|setinfo", "auth"}
_SUBCOMMANDS = {"client", "script", "config", "xinfo", "object", "memory", "command", "function", "cluster"}


def _script_names() -> dict:
    """sha1 -> a short name, for the Lua scripts Baton sends with EVALSHA."""
    names = {}
    try:
        from election import scripts
        for name in ("ACQUIRE", "RENEW", "RELEASE", "READ"):
            names[hashlib.sha1(getattr(scripts, name).encode()).hexdigest()] = name.lower()
    except Exception:
        pass
    for module, attrs in (("workers.orphans", ("SETTLE", "EXPIRE_TICK")), ("workers.store", ("ADVANCE",)),
                          ("workers.fencing", ("FENCED_SET",))):
        try:
            mod = __import__(module, fromlist=list(attrs))
            for attr in attrs:
                names[hashlib.sha1(getattr(mod, attr).encode()).hexdigest()] = attr.lower()
        except Exception:
            pass
    return names


_SCRIPTS = _script_names()


def _parse(text: str, prefix: str):
    """(command name, command name + first key normalised) of a MONITOR line."""
    tokens = text.split(" ")
    name = tokens[0].lower()
    key_at = 1
    if name in _SUBCOMMANDS and len(tokens) > 1:
        name = f"{name}|{tokens[1].lower()}"
        key_at = 2
    if name in ("evalsha", "eval", "evalsha_ro", "eval_ro") and len(tokens) > 1:
        script = _SCRIPTS.get(tokens[1], tokens[1][:8]) if name.startswith("evalsha") else "inline"
        name = f"{name}:{script}"
        key_at = 3 if len(tokens) > 3 and tokens[2] not in ("0",) else len(tokens)
    key = tokens[key_at] if key_at < len(tokens) and name not in _HANDSHAKE else ""
    if key:
        key = key.replace(prefix, "{p}")
        key = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "*", key)
        if len(key) > 60:
            key = key[:57] + "..."
    return name, f"{name} {key}".strip()


# -- who holds a socket (Linux /proc) ------------------------------------------


def _redis_port(url: str) -> int:
    return urlsplit(url).port or 6379


def _client_ports_to_inodes(redis_port: int) -> dict:
    """Local port -> socket inode of every TCP connection to ``redis_port``."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, inode = parts[1], parts[2], parts[9]
                    if int(remote.rsplit(":", 1)[1], 16) == redis_port:
                        out[int(local.rsplit(":", 1)[1], 16)] = inode
        except OSError:
            continue
    return out


def _tagged_pids() -> dict:
    """pid -> dyno tag, for every live process carrying one."""
    out = {}
    needle = f"{TAG}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                for item in f.read().split(b"\0"):
                    if item.startswith(needle):
                        out[int(entry)] = item[len(needle):].decode()
                        break
        except OSError:
            continue
    return out


def _ppid(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _is_rq_worker(pid: int) -> bool:
    args = cmdline(pid)
    return "-m" in args and "workers" in args and args[-1] == "worker"


class _Attribution:
    """address ("ip:port") -> (dyno label, role); see the module docstring."""

    def __init__(self, url: str, prefix: str):
        self.redis_port = _redis_port(url)
        self.prefix = prefix
        self.dynos = {}  # tag -> (label, Dyno)
        self.names = {}  # addr -> client name
        self.pubsub = set()  # addrs seen holding a subscription
        self.owner = {}  # addr -> (label, kind) from /proc
        self.seen = set()  # every non-bench addr seen in CLIENT LIST or MONITOR
        self.tried = Counter()  # addr -> /proc look-ups that found nothing (given up after 3)
        self._lock = threading.Lock()
        self._resolving = threading.Lock()
        self._pids = {}  # pid -> dyno tag, as last seen

    def add_dyno(self, label: str, dyno) -> None:
        self.dynos[dyno.tag] = (label, dyno)

    def learn_from_command(self, addr: str, text: str) -> None:
        if text[:15].upper() == "CLIENT SETNAME ":
            with self._lock:
                self.names[addr] = text[15:].strip().strip('"')

    def own(self, addr: str) -> bool:
        return self.names.get(addr, "").startswith(BENCH_NAME)

    def update(self, clients: list) -> None:
        """Learn from one CLIENT LIST: names, subscriptions, new owners."""
        unknown = []
        with self._lock:
            for c in clients:
                addr = c["addr"]
                if c.get("name"):
                    self.names[addr] = c["name"]
                if c["name"].startswith(BENCH_NAME):
                    continue
                self.seen.add(addr)
                if int(c.get("sub", 0) or 0) + int(c.get("psub", 0) or 0) > 0:
                    self.pubsub.add(addr)
                if addr not in self.owner and self.tried[addr] < 3:
                    unknown.append(addr)
        if unknown:
            self.resolve(unknown)

    def resolve(self, addrs) -> None:
        """Find the process (and so the dyno) holding each address's socket."""
        with self._resolving:
            self._resolve(addrs)

    def _scan(self, pids, by_inode, holders) -> None:
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target in by_inode:
                    holders[by_inode[target]].add(pid)

    def _resolve(self, addrs) -> None:
        wanted = {}
        for addr in addrs:
            host, _, port = addr.rpartition(":")
            if host.strip("[]") in ("127.0.0.1", "::1", "::ffff:127.0.0.1") and port.isdigit():
                wanted[int(port)] = addr
        if not wanted:
            return
        inodes = _client_ports_to_inodes(self.redis_port)
        by_inode = {f"socket:[{inodes[p]}]": addr for p, addr in wanted.items() if p in inodes}
        holders = defaultdict(set)  # addr -> pids holding it
        if by_inode:
            # Cheap first: the dynos' processes known so far and their children
            # (a work horse forked a moment ago); all of /proc only if that fails.
            tags = {pid: tag for pid, tag in self._pids.items() if os.path.exists(f"/proc/{pid}")}
            for pid, tag in list(tags.items()):
                for child in _children(pid):
                    tags.setdefault(child, tag)
            self._scan(tags, by_inode, holders)
            if len(holders) < len(by_inode):
                more = {pid: tag for pid, tag in _tagged_pids().items() if tag in self.dynos and pid not in tags}
                tags.update(more)
                self._scan(more, by_inode, holders)
            self._pids = tags
        found = {}
        for addr in wanted.values():
            if addr not in holders:
                with self._lock:
                    self.tried[addr] += 1
        for addr, pids in holders.items():
            # A socket inherited over a fork (the horse has its worker's) belongs to the parent.
            roots = [p for p in pids if _ppid(p) not in pids] or sorted(pids)
            pid = roots[0]
            label, dyno = self.dynos[self._pids[pid]]
            if pid == dyno.proc.pid:
                kind = "master"
            elif _is_rq_worker(pid):
                parent = _ppid(pid)
                kind = "horse" if parent is not None and _is_rq_worker(parent) else "worker"
            else:
                kind = "http"
            found[addr] = (label, kind)
        with self._lock:
            self.owner.update(found)

    def label(self, addr: str):
        """(dyno label or site, role), or None for an unattributed address."""
        with self._lock:
            name = self.names.get(addr, "")
            owner = self.owner.get(addr)
            pubsub = addr in self.pubsub
        parts = name.split(":")
        if len(parts) == 3 and parts[0] == "baton":
            site, role = parts[1], parts[2]
            if owner and owner[1] == "horse":
                role = "horse"
            elif role == "worker" and pubsub:
                role = "worker-pubsub"
            return (owner[0] if owner else site), role
        if owner:
            if not name:
                return owner[0], f"unnamed-{owner[1]}"
            if owner[1] == "worker" and name.startswith(f"{self.prefix}-"):
                # RQ names one of its connections after the RQ worker
                # (Worker._set_ip_address); it ends up holding RQ's own
                # command channel subscription (rq:pubsub:<worker>).
                return owner[0], "worker-rq-pubsub" if pubsub else "worker-rq-named"
            return owner[0], f"other-{owner[1]}"
        return None


class _CommandCounter:
    """MONITOR's commands per address, counted between begin() and end()."""

    def __init__(self, attribution: _Attribution, prefix: str):
        self.attribution = attribution
        self.prefix = prefix
        self.counts = defaultdict(Counter)  # addr -> command -> n
        self.keyed = defaultdict(Counter)  # addr -> "command key" -> n
        self._on = False
        self._lock = threading.Lock()
        self.unresolved = set()
        self.ready = threading.Event()  # MONITOR is delivering

    def on_command(self, addr: str, text: str) -> None:
        if READY_MARKER in text:
            self.ready.set()
        self.attribution.learn_from_command(addr, text)
        if not self._on or self.attribution.own(addr):
            return
        name, keyed = _parse(text, self.prefix)
        with self._lock:
            self.counts[addr][name] += 1
            self.keyed[addr][keyed] += 1
            if addr not in self.attribution.owner:
                self.unresolved.add(addr)

    def begin(self) -> None:
        with self._lock:
            self.counts.clear()
            self.keyed.clear()
            self._on = True

    def end(self) -> None:
        with self._lock:
            self._on = False

    def resolve_new(self) -> None:
        """Look up, while their processes still live, the owners of addresses
        that sent commands since the last call (the per-second refresh)."""
        with self._lock:
            todo, self.unresolved = self.unresolved, set()
        todo = [a for a in todo if a not in self.attribution.owner and self.attribution.tried[a] < 3]
        if todo:
            self.attribution.resolve(todo)

    def by_label(self):
        """{dyno: {role: Counter}}, {dyno: {role: Counter of keyed}}, unattributed Counter, {dyno: {role: addrs}}."""
        commands = defaultdict(lambda: defaultdict(Counter))
        keyed = defaultdict(lambda: defaultdict(Counter))
        addrs = defaultdict(lambda: defaultdict(set))
        unattributed = Counter()
        with self._lock:
            items = [(a, Counter(c), Counter(self.keyed[a])) for a, c in self.counts.items()]
        for addr, counted, keyed_counted in items:
            where = self.attribution.label(addr)
            if where is None:
                unattributed.update(counted)
                continue
            dyno, role = where
            commands[dyno][role].update(counted)
            keyed[dyno][role].update(keyed_counted)
            addrs[dyno][role].add(addr)
        return commands, keyed, unattributed, addrs


def _named_client(url: str, name: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, client_name=name, socket_timeout=5)


def _monitor_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "client_name=bench:monitor"


def _close_sites(sites) -> dict:
    """Dyno-stop then close every site (each attempted whatever the others do)."""
    reports = {}
    for label, site in list(sites.items()):
        try:
            if site.proc.poll() is None or site.pids():
                report = site.stop()
                reports[label] = {"seconds": round(report.seconds, 2), "clean": report.clean}
        except Exception as exc:  # still closed below
            reports[label] = {"error": repr(exc)}
        finally:
            site.close()
    return reports


def _rate_report(commands, keyed, seconds: float, top: int = 12) -> dict:
    by_role = {role: round(sum(c.values()) / seconds, 3) for role, c in sorted(commands.items())}
    return {
        "commands_per_s": round(sum(sum(c.values()) for c in commands.values()) / seconds, 3),
        "by_role": by_role,
        "commands": {role: dict(c.most_common()) for role, c in sorted(commands.items())},
        "by_key": {role: dict(c.most_common(top)) for role, c in sorted(keyed.items())},
    }


# -- 1. idle cost per site -------------------------------------------------------


def idle_cost_per_site(url: str, seconds: float = 60, prefix: str = "bench-footprint-idle",
                       status_seconds: float = 20, status_every: float = 2.0) -> dict:
    """Commands/s of each idle site, every process included, then the cost of
    /status polling (see the module docstring)."""
    admin = _named_client(url, "bench:admin")
    attribution = _Attribution(url, prefix)
    counter = _CommandCounter(attribution, prefix)
    sites = {}
    monitor = None
    try:
        for name in ("a", "b"):
            sites[name] = WebSite(name, url, prefix, schedule=EMPTY_SCHEDULE, extra_env=PRODUCTION_ENV)
            attribution.add_dyno(name, sites[name])
        leader = wait_until(lambda: leader_site(admin, prefix) in sites and leader_site(admin, prefix), 60, 0.05,
                            "a site to lead")
        follower = "b" if leader == "a" else "a"
        wait_until(lambda: sites[follower].has("worker_waiting_for_lease"), 60, 0.05, "the follower's worker to wait")
        wait_until(lambda: sites[leader].has("worker_start"), 60, 0.05, "the leader's worker")
        time.sleep(3)
        monitor = CommandMonitor(_monitor_url(url), counter.on_command).start()
        deadline = time.monotonic() + 20
        while not counter.ready.is_set():  # MONITOR may take a while to connect on a busy machine
            if time.monotonic() > deadline:
                raise AssertionError("MONITOR delivered nothing within 20 s")
            admin.echo(READY_MARKER)
            counter.ready.wait(0.2)
        attribution.update(admin.client_list())
        connections_before = _connections(admin, attribution)

        # Window 1: nothing talks to the sites.
        counter.begin()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
            attribution.update(admin.client_list())
            counter.resolve_new()
        counter.end()
        idle_window = time.monotonic() - t0
        leader_after = leader_site(admin, prefix)
        commands, keyed, unattributed, _ = counter.by_label()
        idle = {}
        for name in sites:
            role = "leader" if name == leader else "follower"
            report = _rate_report(commands.get(name, {}), keyed.get(name, {}), idle_window)
            idle[name] = {"role": role, **report, "target": TARGETS[role],
                          "meets_target": report["commands_per_s"] <= TARGETS[role]}
        idle_result = {"window_s": round(idle_window, 2), "leader": leader, "leader_unchanged": leader_after == leader,
                       "sites": idle, "unattributed": dict(unattributed),
                       "connections_at_start": connections_before}

        # Window 2: GET /status on each site every status_every s.
        counter.begin()
        requests = Counter()
        statuses = Counter()
        t0 = time.monotonic()
        next_poll = t0
        while time.monotonic() - t0 < status_seconds:
            now = time.monotonic()
            if now >= next_poll:
                for name, site in sites.items():
                    code, _ = site.get("/status")
                    requests[name] += 1
                    statuses[code] += 1
                next_poll += status_every
            attribution.update(admin.client_list())
            counter.resolve_new()
            time.sleep(max(0.0, min(1.0, next_poll - time.monotonic(), status_seconds - (time.monotonic() - t0))))
        counter.end()
        status_window = time.monotonic() - t0
        clients_end = admin.client_list()
        attribution.update(clients_end)
        commands, keyed, unattributed, addrs = counter.by_label()
        polled = {}
        for name in sites:
            web = commands.get(name, {}).get("web", Counter())
            web_addrs = set(addrs.get(name, {}).get("web", set()))
            web_addrs |= {a for a in attribution.seen if attribution.label(a) == (name, "web")}
            end = [{"addr": c["addr"], "age_s": int(c["age"]), "idle_s": int(c["idle"])}
                   for c in clients_end if attribution.label(c["addr"]) == (name, "web")]
            total_web = sum(web.values())
            others = {role: round(sum(c.values()) / status_window, 3)
                      for role, c in sorted(commands.get(name, {}).items()) if role != "web"}
            polled[name] = {
                "requests": requests[name],
                "web_commands": total_web,
                "web_commands_per_request": round(total_web / max(1, requests[name]), 2),
                "web_handshake_commands": sum(n for cmd, n in web.items() if cmd in _HANDSHAKE),
                "web_commands_by_name": dict(web.most_common()),
                "web_connections_seen": len(web_addrs),
                "web_connections_reused": len(web_addrs) <= WEB_CONCURRENCY,
                "web_connections_end": end,
                "other_roles_commands_per_s": others,
            }
        status_result = {"window_s": round(status_window, 2), "every_s": status_every,
                         "http_statuses": {str(k): v for k, v in statuses.items()}, "sites": polled,
                         "unattributed": dict(unattributed)}
        return {"timings": PRODUCTION_ENV, "idle": idle_result, "status_polling": status_result}
    finally:
        try:
            if monitor:
                monitor.stop()
        finally:
            try:
                _close_sites(sites)
            finally:
                admin.close()


def _connections(admin, attribution: _Attribution) -> dict:
    """The non-bench connections now, by dyno/role."""
    clients = admin.client_list()
    attribution.update(clients)
    out = Counter()
    for c in clients:
        if c["name"].startswith(BENCH_NAME):
            continue
        where = attribution.label(c["addr"])
        out["/".join(where) if where else "unattributed"] += 1
    return {"total": sum(out.values()), "by_dyno_role": dict(sorted(out.items()))}


# -- 2. connections during a restart overlap -----------------------------------


class _Sampler(threading.Thread):
    """CLIENT LIST every ``every`` s; each sample: (t, phase, total, breakdown)."""

    def __init__(self, url: str, attribution: _Attribution, every: float = 0.05, max_seconds: float = 240):
        super().__init__(name="bench-footprint-sampler", daemon=True)
        self.client = _named_client(url, "bench:sampler")
        self.attribution = attribution
        self.every = every
        self.max_seconds = max_seconds
        self.phase = "start"
        self.samples = []
        self.errors = 0
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        deadline = self.t0 + self.max_seconds
        while not self._halt.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            try:
                clients = self.client.client_list()
                self.attribution.update(clients)
                breakdown = Counter()
                for c in clients:
                    if c["name"].startswith(BENCH_NAME):
                        continue
                    where = self.attribution.label(c["addr"])
                    breakdown["/".join(where) if where else "unattributed"] += 1
                self.samples.append((round(began - self.t0, 3), self.phase, sum(breakdown.values()),
                                     dict(sorted(breakdown.items()))))
            except redis.RedisError:
                self.errors += 1
            self._halt.wait(max(0.0, self.every - (time.monotonic() - began)))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.client.close()


def _phase_summary(samples, phase: str) -> dict:
    totals = [s[2] for s in samples if s[1] == phase]
    if not totals:
        return {"samples": 0}
    last = [s for s in samples if s[1] == phase][-1]
    return {"samples": len(totals), "min": min(totals), "median": statistics.median(totals), "max": max(totals),
            "last_breakdown": last[3]}


def _web_connections(admin, attribution: _Attribution, label: str) -> int:
    clients = admin.client_list()
    attribution.update(clients)
    return sum(1 for c in clients if attribution.label(c["addr"]) == (label, "web"))


def _hit_status(site, label: str, admin, attribution: _Attribution, every_http_worker: bool) -> int:
    """GET /status once, or — ``every_http_worker`` — pairs of concurrent
    GETs (at most 10 pairs) until each of the dyno's WEB_CONCURRENCY HTTP
    workers holds its Redis connection. The dyno's web connections after."""
    site.get("/status")
    if every_http_worker:
        for _ in range(10):
            if _web_connections(admin, attribution, label) >= WEB_CONCURRENCY:
                break
            threads = [threading.Thread(target=site.get, args=("/status",), daemon=True) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
    return _web_connections(admin, attribution, label)


def connections_in_restart_overlap(url: str, prefix: str = "bench-footprint-overlap",
                                   steady_seconds: float = 5.0, sample_every: float = 0.05,
                                   every_http_worker: bool = False) -> dict:
    """The most Redis connections two sites hold at once while one restarts
    (see the module docstring)."""
    admin = _named_client(url, "bench:admin")
    attribution = _Attribution(url, prefix)
    sites = {}
    sampler = None
    phases = {}
    try:
        sites["a"] = WebSite("a", url, prefix, schedule=ONE_SECOND_SCHEDULE, extra_env=PRODUCTION_ENV)
        attribution.add_dyno("a", sites["a"])
        wait_until(lambda: leader_site(admin, prefix) == "a", 60, 0.05, "a to lead")
        sites["b"] = WebSite("b", url, prefix, schedule=ONE_SECOND_SCHEDULE, extra_env=PRODUCTION_ENV)
        attribution.add_dyno("b", sites["b"])
        wait_until(lambda: sites["b"].has("worker_waiting_for_lease"), 60, 0.05, "b's worker to wait")
        runs_before = len(recorded_runs(admin, prefix))
        wait_until(lambda: len(recorded_runs(admin, prefix)) >= runs_before + 2, 30, 0.05, "a's ticks")

        sampler = _Sampler(url, attribution, sample_every)
        sampler.start()

        def phase(name):
            sampler.phase = name
            phases[name] = round(time.monotonic() - sampler.t0, 3)

        phase("before")
        web = {}
        for name in ("a", "b"):  # the HTTP worker(s) that served it now hold a connection
            web[name] = _hit_status(sites[name], name, admin, attribution, every_http_worker)
        time.sleep(steady_seconds)

        phase("new_dyno_boot")
        sites["a-new"] = WebSite("a", url, prefix, schedule=ONE_SECOND_SCHEDULE, extra_env=PRODUCTION_ENV)
        attribution.add_dyno("a-new", sites["a-new"])
        wait_until(lambda: sites["a-new"].has("boot"), 60, 0.02, "the new dyno's boot line")
        time.sleep(2)
        web["a-new"] = _hit_status(sites["a-new"], "a-new", admin, attribution, every_http_worker)

        old_token = _lease(admin, prefix).token
        phase("old_dyno_stop")
        old = sites.pop("a")
        try:
            report = old.stop()
        finally:
            old.close()
        stop_report = {"seconds": round(report.seconds, 2), "clean": report.clean, "returncode": report.returncode}

        phase("takeover")
        new_leader = wait_until(lambda: (r := _lease(admin, prefix)) is not None and r.token != old_token and r, 30,
                                0.02, "a new leader")
        token = new_leader.token
        wait_until(lambda: any(r.get("token") == token for r in recorded_runs(admin, prefix)), 30, 0.05,
                   "the new leader's ticks")
        new_leader_site = new_leader.site
        new_leader_dyno = ("a-new" if new_leader.site == "a" else new_leader.site)

        phase("after")
        time.sleep(steady_seconds)
        sampler.stop()
        samples = sampler.samples
        peak = max(samples, key=lambda s: s[2])
        by_phase = {}
        for s in samples:
            by_phase[s[1]] = max(by_phase.get(s[1], 0), s[2])
        return {
            "timings": PRODUCTION_ENV,
            "sample_every_s": sample_every,
            "every_http_worker": every_http_worker,
            "web_connections_after_status": web,
            "samples": len(samples),
            "sampler_errors": sampler.errors,
            "phases_started_at_s": phases,
            "peak": {"total": peak[2], "at_s": peak[0], "phase": peak[1], "by_dyno_role": peak[3]},
            "peak_fits": peak[2] <= MAX_CONNECTIONS,
            "limit": MAX_CONNECTIONS,
            "peak_per_phase": by_phase,
            "steady_before": _phase_summary(samples, "before"),
            "steady_after": _phase_summary(samples, "after"),
            "old_dyno_stop": stop_report,
            "leader_after": {"site": new_leader_site, "dyno": new_leader_dyno, "token": token},
        }
    finally:
        try:
            if sampler is not None and sampler.is_alive():
                sampler.stop()
        finally:
            try:
                _close_sites(sites)
            finally:
                admin.close()


def _lease(admin, prefix):
    from election import read_lease
    return read_lease(admin, prefix)


def summary(idle: dict, overlaps: dict) -> dict:
    """The headline figures against the targets."""
    out = {"idle_commands_per_s": {}, "status_poll": {}, "restart_overlap_peak": {}}
    for name, site in idle["idle"]["sites"].items():
        out["idle_commands_per_s"][name] = {"role": site["role"], "measured": site["commands_per_s"],
                                            "target": site["target"], "ok": site["meets_target"],
                                            "by_role": site["by_role"]}
    for name, site in idle["status_polling"]["sites"].items():
        out["status_poll"][name] = {"commands_per_request": site["web_commands_per_request"],
                                    "web_connections": site["web_connections_seen"],
                                    "reused": site["web_connections_reused"]}
    for variant, result in overlaps.items():
        out["restart_overlap_peak"][variant] = {
            "peak": result["peak"]["total"], "limit": result["limit"], "ok": result["peak_fits"],
            "phase": result["peak"]["phase"], "steady_before_median": result["steady_before"].get("median"),
            "steady_after_median": result["steady_after"].get("median")}
    return out


def main() -> int:
    from tests.support.redis_server import RedisServer

    started = time.monotonic()
    seconds = float(os.environ.get("BENCH_FOOTPRINT_IDLE_SECONDS", "60"))
    overlaps = {}
    with RedisServer() as server:
        t = time.monotonic()
        idle = idle_cost_per_site(server.url, seconds=seconds)
        idle["seconds_total"] = round(time.monotonic() - t, 1)
        for variant, every, prefix in (("one_status_request", False, "bench-footprint-overlap"),
                                       ("every_http_worker_connected", True, "bench-footprint-overlap-all")):
            t = time.monotonic()
            overlaps[variant] = connections_in_restart_overlap(server.url, prefix=prefix, every_http_worker=every)
            overlaps[variant]["seconds_total"] = round(time.monotonic() - t, 1)
    print(json.dumps({"summary": summary(idle, overlaps), "idle_cost_per_site": idle,
                      "connections_in_restart_overlap": overlaps,
                      "run_seconds": round(time.monotonic() - started, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
