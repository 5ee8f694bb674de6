"""How Baton's costs grow with the work it is given: schedule entries, queued
backlog, competing sites. Every function takes the URL of a redis-server the
caller started (it writes only keys under its own prefix, and deletes them).

entries_scale — N interval entries, all due at the same instants (every
PERIOD s: all their ticks fall on the same multiples of PERIOD since the
epoch), run by a real ``TickScheduler`` thread in this process that always
leads. No worker consumes the ticks. The first due instant after start is
not measured (the schedule is written just before it and its batch is built
with the smallest prepare-ahead); the next ``rounds`` are. Per N:
  - ``lateness_ms``: for each tick, the scheduler's own ``tick_enqueued``
    log field: wall time after the MULTI that enqueued the tick's job (and
    its ledger entry) returned, minus the tick's scheduled time — the job is
    in Redis at that instant. Whole ms (the log rounds it).
  - ``commands_per_tick``: every command the Redis server ran during the
    measured window (``INFO commandstats`` calls, delta; the bench's own INFO
    excluded), divided by the ticks enqueued in it. The window opens half a
    PERIOD after the skipped instant (later if its slots are not advanced
    yet) and closes as long after the last measured one, so it holds exactly
    ``rounds`` periods and everything the scheduler does in them: slot
    reads, the EXISTS checks, the enqueue MULTI, slot advances, orphan
    sweeps. The server counts the commands a Lua script runs inside it too
    (ADVANCE's ZSCORE + ZADD beside its EVALSHA), so this is server work,
    not round trips.
  - ``cpu_ms_per_tick``: this process's CPU time (user + system,
    ``time.process_time``) over the same window, divided by the ticks. The
    main thread only sleeps and reads INFO twice; the rest is the scheduler
    thread (building the jobs, redis-py parsing, logging one line per tick
    into a handler that only keeps the lateness).
  ``ticks`` below ``expected_ticks`` means a measured instant was not
  enqueued before the window closed (``instants`` lists each one's ticks
  and worst lateness); the commands and CPU are still divided by the ticks
  actually enqueued.
  The ledger and the queue grow by N per round since nobody consumes, so the
  orphan sweeps in the window read up to N x (rounds + 1) entries: a little
  more than a consumed deployment would sweep.

backlog_scale — N tick jobs enqueued and not consumed (one catch-up entry,
one tick per second of the past, grace so long that none expires), then the
leader's ``OrphanSweep.sweep()`` over them, 5 times. Per N:
  - ``sweep_ms``: median wall time of one sweep call in this process
    (HGETALL of the ledger, one LRANGE per queue, parsing both in Python);
  - ``server_ms``: median time the server spent running a sweep's commands
    (``INFO commandstats`` usec, delta); ``commands``: median commands run;
  - ``us_per_entry``: sweep_ms per queued job, in µs;
  - ``all_waiting``: the sweep found every one of the N jobs in its queue
    (nothing lost, nothing requeued or expired).
  ``growth_exponent`` is log(t2/t1)/log(n2/n1) of sweep_ms between the two
  largest N: 1 means linear, below 1 better, above 1 worse than O(N).

sites_scale — N elector processes, one per site, default ``ElectionConfig``,
all on one lease. Per N:
  - ``handoff_ms``: graceful handoff, ``rounds`` times: the leader is told
    to stop its elector (a SIGTERM'd dyno: demote, RELEASE, which wakes every
    waiting follower), and the lag is from just before its RELEASE is sent to
    the new leader's on_elected, both on CLOCK_MONOTONIC (system-wide on
    Linux). With N sites the release wakes all N-1 followers at once, they
    race their ACQUIREs, and the lag is the winner's. The released site then
    competes again; the next round starts once every follower, it included,
    is blocked waiting (INFO ``blocked_clients`` = N-1) and 20 ms have passed.
  - idle cost, with all N running and nobody handing over, for ``idle_s``:
    ``commands_per_s`` — commands the electors' connections sent (MONITOR,
    attributed by connection name, Lua's inner commands not counted: round
    trips, as in election_bench.idle_cost), in total and per site;
    ``server_calls_per_s`` — every command the server ran (commandstats
    delta, Lua's inner commands included; the bench's own INFO, CLIENT LIST
    and MONITOR excluded); ``connections_per_elector_max`` — the most
    connections named ``baton:<site>:elector`` that one site had in a CLIENT
    LIST sample (once a second).

    python -m bench.scale_bench    # all three, own redis-server

Each site of sites_scale is a ``bench.handoff_child baton`` process (the
handoff benchmark's contender: stdin "release" / "compete", JSON events).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime

from bench.stats import fmt_ms, summary, table

# redis, election and workers are imported where they are used, each by the
# part that needs it.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The bench's own commands, left out of the server's counts.
BENCH_OWN_COMMANDS = ("cmdstat_info", "cmdstat_client|list", "cmdstat_monitor")

# A thousand entries are enqueued in well under a second, so 5 s periods keep
# the rounds short; 10,000 take longer to build (and to write as templates),
# so they get 10 s between instants to stay clear of the next one.
SHORT_PERIOD_S = 5
LONG_PERIOD_S = 10

# TickScheduler.enqueue sends one MULTI per call: chunks keep each one (and
# the redis-py pipeline buffer behind it) bounded.
ENQUEUE_CHUNK = 5000
SWEEPS_PER_SIZE = 5

# A handoff (or the followers' return to their wait) that takes longer than
# this is a failure, not a sample.
HANDOFF_WAIT_S = 5.0
# Once every follower waits, a moment for the woken losers' last output and
# logging to finish before the next release.
SETTLE_S = 0.02


# -- shared helpers --------------------------------------------------------------

def _admin(url):
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def command_totals(admin) -> tuple:
    """(calls, usec) summed over every command the server has run, minus the
    bench's own INFO / CLIENT LIST / MONITOR."""
    stats = admin.info("commandstats")
    calls = sum(v["calls"] for k, v in stats.items() if k not in BENCH_OWN_COMMANDS)
    usec = sum(v["usec"] for k, v in stats.items() if k not in BENCH_OWN_COMMANDS)
    return calls, usec


def delete_prefix(admin, prefix: str) -> int:
    """Delete every key that carries ``prefix``: Baton's ``{prefix}:...``,
    RQ's ``rq:job:{prefix}-...``, ``rq:queue:{prefix}-...``, its registries,
    ``rq:scheduler:{prefix}:...``. The ``:`` / ``-`` after the prefix keeps
    ``bench-n10`` from matching ``bench-n1000``'s keys."""
    deleted = 0
    for pattern in (f"*{prefix}:*", f"*{prefix}-*"):
        batch = []
        for key in admin.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += admin.unlink(*batch)
                batch = []
        if batch:
            deleted += admin.unlink(*batch)
    # RQ lists every queue it has seen in one set shared by all deployments.
    stale = [q for q in admin.smembers("rq:queues") if f"{prefix}-" in q]
    if stale:
        admin.srem("rq:queues", *stale)
    return deleted


# -- entries: lateness, commands and CPU per tick --------------------------------

class _SchedulerLog(logging.Handler):
    """Keeps what the scheduler logs about each tick, by tick time; and any
    warning or error (a skipped tick, a loop error) to report."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.lateness_by_tick = {}  # tick (iso) -> [lateness ms, ...]
        self.problems = []
        self.schedule_written = threading.Event()
        self.first_tick = None  # the first tick enqueued (iso)
        self.first_enqueued = threading.Event()

    def emit(self, record):
        fields = getattr(record, "logfmt", None) or {}
        event = fields.get("event")
        if event == "tick_enqueued":
            self.lateness_by_tick.setdefault(fields["tick"], []).append(fields["lateness_ms"])
            if self.first_tick is None:
                self.first_tick = fields["tick"]
                self.first_enqueued.set()
        elif event == "schedule_written":
            self.schedule_written.set()
        elif record.levelno >= logging.WARNING:
            self.problems.append(event or record.getMessage())


def _sleep_until(wall_time: float) -> None:
    while True:
        left = wall_time - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 1.0))


def _entries_round(url, admin, size: int, rounds: int, prefix: str) -> dict:
    import redis
    from zoneinfo import ZoneInfo

    from workers.batch import iso
    from workers.entries import Entry, check_schedule
    from election import Keys
    from workers.scheduler import MAX_PREPARE_AHEAD_S, TickScheduler

    period = SHORT_PERIOD_S if size <= 1000 else LONG_PERIOD_S
    entries = check_schedule([Entry(f"e{i}", "workers.jobs:heartbeat", every=period) for i in range(size)])
    connection = redis.Redis.from_url(url)  # no decode_responses: RQ needs bytes
    logger = logging.getLogger("baton.scheduler")
    handler = _SchedulerLog()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    scheduler = TickScheduler(connection, prefix, ZoneInfo("UTC"), entries, is_leader=lambda: True, site="bench")
    try:
        started = time.time()
        scheduler.on_elected(1)
        scheduler.start()
        if not handler.schedule_written.wait(period * 3):
            raise RuntimeError(f"{size} entries: the schedule was not written within {period * 3} s")
        written_s = time.time() - started
        # The write puts every slot on the first multiple of the period after
        # it; the first batch says which instant that was.
        if not handler.first_enqueued.wait(period * 3):
            raise RuntimeError(f"{size} entries: no tick enqueued within {period * 3} s of the write")
        first = datetime.fromisoformat(handler.first_tick).timestamp()
        # An instant less than a period after the start follows the write
        # too closely (and its batch was built with the smallest prepare-ahead).
        skipped = first if first - started < period else first - period
        measured = [skipped + period * (k + 1) for k in range(rounds)]
        # The window opens once the skipped instant's batch is sent and its
        # slots advanced (half a period after it, or later for a slow first
        # batch), before the next batch is built (at most MAX_PREPARE_AHEAD_S
        # ahead), and closes as long after the last measured instant: it
        # holds whole periods.
        _sleep_until(skipped + period / 2)
        slots_key = Keys(prefix).scheduled_jobs
        latest_start = skipped + period - MAX_PREPARE_AHEAD_S
        while admin.zcount(slots_key, "-inf", skipped) and time.time() < latest_start:
            time.sleep(0.01)
        first_done = len(handler.lateness_by_tick.get(iso(skipped), []))
        offset = time.time() - skipped
        calls_before, _ = command_totals(admin)
        cpu_before = time.process_time()
        _sleep_until(measured[-1] + offset)
        cpu_after = time.process_time()
        calls_after, _ = command_totals(admin)
    finally:
        scheduler.stop()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        connection.close()
    lateness = [ms for tick in measured for ms in handler.lateness_by_tick.get(iso(tick), [])]
    ticks = len(lateness)
    instants = [{"tick": iso(tick), "ticks": len(handler.lateness_by_tick.get(iso(tick), [])),
                 "max_lateness_ms": max(handler.lateness_by_tick.get(iso(tick), []), default=None)}
                for tick in measured]
    return {
        "ticks": ticks,
        "expected_ticks": size * rounds,
        "instants": instants,
        "period_s": period,
        "lateness_ms": summary(lateness),
        "commands_per_tick": (calls_after - calls_before) / max(ticks, 1),
        "cpu_ms_per_tick": (cpu_after - cpu_before) * 1000 / max(ticks, 1),
        "schedule_write_s": round(written_s, 2),
        "window_opened_s_after_skipped_instant": round(offset, 2),
        "skipped_instant_ticks": first_done,  # all `size` of them, or the window opened mid-batch
        "problems": sorted(set(handler.problems)),
    }


def entries_scale(url: str, sizes=(10, 1000, 10000), rounds: int = 3, prefix: str = "bench-scale") -> dict:
    """N entries due at the same instants → tick lateness, Redis commands and
    scheduler CPU per tick (see the module docstring)."""
    admin = _admin(url)
    results = {}
    try:
        for size in sizes:
            own_prefix = f"{prefix}-n{size}"
            try:
                results[size] = _entries_round(url, admin, size, rounds, own_prefix)
            finally:
                delete_prefix(admin, own_prefix)
    finally:
        admin.close()
    return results


# -- backlog: the orphan sweep's cost ------------------------------------------------

def backlog_scale(url: str, sizes=(100, 1000, 10000, 100000), prefix: str = "bench-backlog") -> dict:
    """N unconsumed tick jobs → the cost of one orphan sweep over them (see
    the module docstring)."""
    import redis
    from zoneinfo import ZoneInfo

    from workers.entries import Entry
    from workers.orphans import OrphanSweep
    from workers.scheduler import TickScheduler

    admin = _admin(url)
    # catch_up and a huge grace: ticks far in the past are still live, so the
    # sweep sees them all waiting and expires none.
    entry = Entry("backlog", "workers.jobs:heartbeat", every=1, missed="catch_up", grace=10**6).check()
    results = {}
    try:
        for size in sizes:
            own_prefix = f"{prefix}-n{size}"
            connection = redis.Redis.from_url(url)
            try:
                scheduler = TickScheduler(connection, own_prefix, ZoneInfo("UTC"), [entry],
                                          is_leader=lambda: True, site="bench")
                base = math.floor(time.time()) - size - 10
                enqueue_started = time.monotonic()
                enqueued = 0
                for start in range(0, size, ENQUEUE_CHUNK):
                    stop = min(size, start + ENQUEUE_CHUNK)
                    enqueued += len(scheduler.enqueue([(entry, base + i) for i in range(start, stop)]))
                enqueue_s = time.monotonic() - enqueue_started
                sweep = OrphanSweep(connection, own_prefix, site="bench")
                wall_ms, server_ms, commands, all_waiting = [], [], [], True
                for _ in range(SWEEPS_PER_SIZE):
                    calls_before, usec_before = command_totals(admin)
                    began = time.perf_counter()
                    outcome = sweep.sweep()
                    wall_ms.append((time.perf_counter() - began) * 1000)
                    calls_after, usec_after = command_totals(admin)
                    commands.append(calls_after - calls_before)
                    server_ms.append((usec_after - usec_before) / 1000)
                    all_waiting = all_waiting and len(outcome) == size and set(outcome.values()) == {"waiting"}
                median_ms = statistics.median(wall_ms)
                results[size] = {
                    "enqueued": enqueued,
                    "enqueue_s": round(enqueue_s, 2),
                    "sweep_ms": median_ms,
                    "sweep_ms_all": [round(ms, 2) for ms in wall_ms],
                    "server_ms": statistics.median(server_ms),
                    "commands": statistics.median(commands),
                    "us_per_entry": median_ms * 1000 / size,
                    "all_waiting": all_waiting,
                }
            finally:
                connection.close()
                delete_prefix(admin, own_prefix)
    finally:
        admin.close()
    largest = sorted(results)[-2:]
    if len(largest) == 2:
        (n1, n2) = largest
        results["growth_exponent"] = math.log(results[n2]["sweep_ms"] / results[n1]["sweep_ms"]) / math.log(n2 / n1)
    return results


# -- sites: graceful handoff and idle cost with N competitors -------------------------

class _SiteProcess:
    def __init__(self, url, prefix, site, events):
        self.site = site
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.handoff_child", "baton", url, prefix, site],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read, args=(events,), daemon=True).start()

    def _read(self, events):
        for line in self.proc.stdout:
            if line.startswith("{"):
                events.put({**json.loads(line), "site": self.site})

    def tell(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self):
        try:
            self.proc.stdin.close()  # the child stops its elector and exits
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _next_event(events, wanted, timeout):
    """The first event ``wanted(event)`` accepts within ``timeout``; others are dropped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            item = events.get(timeout=max(0.001, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"no awaited event within {timeout} s") from None
        if wanted(item):
            return item


def _wait_blocked(admin, count: int, timeout: float) -> None:
    """Until ``count`` clients are blocked (the followers, in their BLPOP).
    Only the electors block on the server while sites_scale runs."""
    deadline = time.monotonic() + timeout
    while admin.info("clients")["blocked_clients"] != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} followers were not all waiting within {timeout} s")
        time.sleep(0.005)


def _sites_round(url, admin, size: int, rounds: int, idle_s: float, prefix: str) -> dict:
    from bench.monitor import CommandMonitor

    events: "queue.Queue" = queue.Queue()
    names = [f"site{i:02d}" for i in range(size)]
    children = {}
    try:
        # One first, so who leads is known; then the rest join as followers.
        children[names[0]] = _SiteProcess(url, prefix, names[0], events)
        _next_event(events, lambda e: e["event"] == "leading", 20)
        leader = children[names[0]]
        for name in names[1:]:
            children[name] = _SiteProcess(url, prefix, name, events)
        _wait_blocked(admin, size - 1, 30)
        time.sleep(0.5)  # the late starters' imports and first waits are over

        lags = []
        for _ in range(rounds):
            time.sleep(SETTLE_S)
            leader.tell("release")
            sent = took = None
            deadline = time.monotonic() + HANDOFF_WAIT_S
            winner = None
            while sent is None or took is None:
                item = _next_event(events, lambda e: True, max(0.001, deadline - time.monotonic()))
                if item["event"] == "release_sent" and item["site"] == leader.site:
                    sent = item["t"]
                elif item["event"] == "leading" and item["site"] != leader.site:
                    took, winner = item["t"], children[item["site"]]
            lags.append((took - sent) * 1000)
            # Only now may the released site compete again, so it never wins
            # its own lease back; the next round waits until it waits.
            leader.tell("compete")
            leader = winner
            _wait_blocked(admin, size - 1, HANDOFF_WAIT_S)

        # Idle: everyone up, nobody handing over.
        time.sleep(1.0)
        electors = {f"baton:{name}:elector": name for name in names}
        addresses = {}
        most_connections = 0

        def look_at_clients():
            nonlocal most_connections
            per_site = {name: 0 for name in names}
            for client in admin.client_list():
                site = electors.get(client.get("name", ""))
                if site:
                    addresses[client["addr"]] = site
                    per_site[site] += 1
            most_connections = max(most_connections, *per_site.values())

        sent_commands = {name: 0 for name in names}

        def count(address, _text):
            if address not in addresses:
                look_at_clients()  # a reconnect: a new address for a known name
            site = addresses.get(address)
            if site:
                sent_commands[site] += 1

        look_at_clients()
        monitor = CommandMonitor(url, count).start()
        try:
            calls_before, _ = command_totals(admin)
            window_started = time.monotonic()
            stop_at = window_started + idle_s
            while time.monotonic() < stop_at:
                time.sleep(min(1.0, max(0.0, stop_at - time.monotonic())))
                look_at_clients()
            calls_after, _ = command_totals(admin)
            window = time.monotonic() - window_started
        finally:
            monitor.stop()
        total_sent = sum(sent_commands.values())
        return {
            "handoff_ms": summary(lags),
            "idle_window_s": round(window, 2),
            "commands_per_s": total_sent / window,
            "commands_per_s_per_site": total_sent / window / size,
            "server_calls_per_s": (calls_after - calls_before) / window,
            "connections_per_elector_max": most_connections,
        }
    finally:
        for child in children.values():
            child.close()


def sites_scale(url: str, sizes=(2, 10, 20), rounds: int = 200, idle_s: float = 20, prefix: str = "bench-sites") -> dict:
    """N sites on one lease → graceful handoff lag and idle cost (see the
    module docstring)."""
    admin = _admin(url)
    results = {}
    try:
        for size in sizes:
            own_prefix = f"{prefix}-n{size}"
            try:
                results[size] = _sites_round(url, admin, size, rounds, idle_s, own_prefix)
            finally:
                delete_prefix(admin, own_prefix)
    finally:
        admin.close()
    return results


# -- the table -------------------------------------------------------------------------

def render(results) -> str:
    out = []
    rows = []
    for size, r in results["entries"].items():
        lateness = r["lateness_ms"]
        rows.append([size, f"{r['ticks']}/{r['expected_ticks']}", fmt_ms(lateness.get("p50")),
                     fmt_ms(lateness.get("p99")), fmt_ms(lateness.get("max")), f"{r['commands_per_tick']:.1f}",
                     f"{r['cpu_ms_per_tick']:.3f}", "p99 <= 50 ms" if size <= 1000 else "—"])
    out.append(table(["entries due together", "ticks", "lateness p50", "p99", "max", "commands/tick",
                      "CPU ms/tick", "target"], rows))
    rows = []
    backlog = results["backlog"]
    for size, r in backlog.items():
        if size == "growth_exponent":
            continue
        rows.append([size, fmt_ms(r["sweep_ms"]), fmt_ms(r["server_ms"]), r["commands"],
                     f"{r['us_per_entry']:.2f}", r["all_waiting"]])
    out.append("")
    out.append(table(["queued backlog", "sweep (median)", "server time", "commands", "µs/entry", "all waiting"],
                     rows))
    if "growth_exponent" in backlog:
        out.append(f"sweep time growth exponent, two largest sizes: {backlog['growth_exponent']:.2f} "
                   "(target <= 1: O(N) or better)")
    rows = []
    for size, r in results["sites"].items():
        h = r["handoff_ms"]
        rows.append([size, h["n"], fmt_ms(h.get("p50")), fmt_ms(h.get("p99")), fmt_ms(h.get("max")),
                     f"{r['commands_per_s']:.2f}", f"{r['commands_per_s_per_site']:.2f}",
                     f"{r['server_calls_per_s']:.2f}", r["connections_per_elector_max"],
                     "p99 <= 5 ms" if size >= 20 else "—"])
    out.append("")
    out.append(table(["sites", "handoffs", "handoff p50", "p99", "max", "idle cmd/s", "per site",
                      "server calls/s", "conns/elector", "target"], rows))
    return "\n".join(out)


def main() -> int:
    from tests.support.redis_server import RedisServer

    results, elapsed = {}, {}
    with RedisServer() as server:
        for name, fn in (("entries", entries_scale), ("backlog", backlog_scale), ("sites", sites_scale)):
            print(f"... {name}", flush=True)
            started = time.monotonic()
            results[name] = fn(server.url)
            elapsed[name] = round(time.monotonic() - started, 1)
            print(f"    done in {elapsed[name]} s", flush=True)
    results["elapsed_s"] = elapsed
    print(json.dumps(results, indent=2))
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
