"""The web process, measured: boot-to-bound, SIGTERM handoff end to end,
Redis connections and memory per dyno. Real gunicorn processes."""

from __future__ import annotations

import time

import redis

from tests.support.waiting import wait_until
from election import read_lease
from tests.support.web import WebSite


def boot_to_bound(url: str, rounds: int, prefix: str = "bench-boot") -> list:
    """gunicorn started → its port accepts connections (ms)."""
    samples = []
    for i in range(rounds):
        site = WebSite(f"boot{i}", url, prefix)
        try:
            wait_until(site.bound, 30, 0.002, "the port")
            samples.append((time.monotonic() - site.started) * 1000)
        finally:
            site.close()
    return samples


def sigterm_handoff(url: str, rounds: int, prefix: str = "bench-sigterm") -> list:
    """A dyno stop of the leading site (SIGTERM to every process of the dyno,
    as Heroku sends it), no job running → the other site holds the lease
    (ms). The end is the new lease's acquired_at (server clock, ms) against
    the wall time the first signal was sent."""
    client = redis.Redis.from_url(url, decode_responses=True)
    names = ["x", "y"]
    sites = {n: WebSite(n, url, prefix) for n in names}
    samples = []
    try:
        for _ in range(rounds):
            wait_until(lambda: read_lease(client, prefix) is not None, 30, 0.002, "a leader")
            holder = read_lease(client, prefix).site
            other = "y" if holder == "x" else "x"
            wait_until(lambda: sites[other].has("leader_changed"), 30, 0.002, "the other site to follow")
            time.sleep(0.3)
            sent = time.time()
            sites[holder].stop()
            wait_until(lambda: (r := read_lease(client, prefix)) is not None and r.site == other, 10, 0.002, "handoff")
            samples.append(read_lease(client, prefix).acquired_at - sent * 1000)
            sites[holder].close()
            sites[holder] = WebSite(holder, url, prefix)
    finally:
        for site in sites.values():
            site.close()
        client.close()
    return samples


def _tree(pid: int) -> list:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _memory_kb(pid: int, field: str) -> int:
    path = f"/proc/{pid}/smaps_rollup" if field == "Pss:" else f"/proc/{pid}/status"
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def dyno_footprint(url: str, seconds: float, prefix: str = "bench-dyno") -> dict:
    """One site, WEB_CONCURRENCY=2 with the embedded workers (the default
    BATON_WORKER_CONCURRENCY), at steady state:
    the most Redis connections it held at once (CLIENT LIST on a server of
    its own, named or not — RQ's pubsub connection carries no name), and the
    memory of the whole process tree (master, HTTP workers, RQ worker):
    RSS summed (counts pages shared after fork once per process) and PSS
    summed (shares them out: the honest total)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    site = WebSite("dyno", url, prefix, schedule="workers.schedule")
    try:
        wait_until(lambda: site.has("worker_start"), 30, 0.002, "the embedded worker")
        time.sleep(2)
        most, rss, pss = 0, 0, 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            clients = client.client_list()
            # The server is this measurement's alone: every client but ours is the dyno's.
            most = max(most, len(clients) - 1)
            pids = _tree(site.proc.pid)
            rss = max(rss, sum(_memory_kb(p, "VmRSS:") for p in pids))
            pss = max(pss, sum(_memory_kb(p, "Pss:") for p in pids))
            time.sleep(1)
        names = sorted(c["name"] for c in client.client_list() if c["name"].startswith("baton:dyno:"))
    finally:
        try:
            site.stop()
        finally:
            site.close()
        client.close()
    return {"connections_max": most, "connection_names": names, "rss_mb": rss / 1024, "pss_mb": pss / 1024,
            "processes": len(pids)}
