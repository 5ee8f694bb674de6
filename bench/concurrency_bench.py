"""What ``BATON_WORKER_CONCURRENCY`` costs a site: memory of the web dyno and
Redis connections, for N = 1, 2, 4 worker processes (the default and its
reasoning: workers/settings.py).

For each N, on a redis-server of the measurement's own (every client but
the benchmark's is a site's), at the production election timings, with the
embedded workers and WEB_CONCURRENCY=2 (tests/support/web.py):

- site "L<N>" boots, leads, and its N workers start; then site "F<N>"
  boots, with the same prefix and N, and follows (one worker waits for the
  lease, subscribed to the election feed: a following dyno starts the
  others only when it is elected, workers/pool.py);
- *idle*: ``SAMPLE_S`` of samples every ``SAMPLE_EVERY_S`` s, nothing
  running;
- *N jobs*: N ticks of ``tests.support.jobs:sleeps`` (sleeps, allocates
  nothing) enqueued at once; once N work horses run (N ``job_start``
  lines), ``SAMPLE_S`` of samples again.

Each sample: the leading dyno's memory, summed over every process of the
dyno (gunicorn master, HTTP workers, RQ workers, work horses — found by the
dyno's tag, as the platform finds them: platform.Dyno.pids()), as PSS (pages
shared after fork shared out: the honest total, what the dyno really uses)
and RSS (shared pages counted once per process: an upper bound; Heroku's
memory figure is close to RSS less shared file pages); and the connections
of each site from CLIENT LIST, by name ``baton:<site>:<role>`` — a work
horse's connection carries its worker's name, ``worker``. The largest of
each is reported. ``added_per_worker`` is the slope from N=1 to the largest
N: what one more worker process costs.

Both sites are stopped as Heroku stops a dyno between two N.

Then, for each N, footprint_bench's restart overlap (``every_http_worker``:
two sites, a new dyno of the leading one boots and the old one stops, with
a 1 s entry; CLIENT LIST every 50 ms) with ``BATON_WORKER_CONCURRENCY=N``
on every dyno: ``restart_overlap_peak``, the most connections of all three
dynos at once — what Heroku's Mini plan (20, 19 promised) must hold. A
lower bound: a connection shorter than 50 ms, a horse's, may be missed, and
its jobs are short; a long job running on the old leader adds its horse's
two connections.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from contextlib import contextmanager

import redis

from bench.footprint_bench import PRODUCTION_ENV, connections_in_restart_overlap
from bench.stats import table
from bench.web_bench import _memory_kb
from tests.support.jobs import enqueue_tick
from tests.support.lease import leader_site
from tests.support.waiting import wait_until
from tests.support.web import WebSite

COUNTS = (1, 2, 4)
JOB = "tests.support.jobs:sleeps"
JOB_S = 8.0  # long enough for N horses to start and the samples to be taken
SAMPLE_S = 3.0
SAMPLE_EVERY_S = 0.1
SCHEDULE = "tests.support.schedule_empty"  # the benchmark enqueues the jobs itself
WEB_CONCURRENCY = 2  # what WebSite sets
DYNO_MB = 512  # a Heroku Basic/Standard-1X dyno
MINI_CONNECTIONS = 20  # Heroku's Mini Key-Value Store plan, for every site together


def _memory_mb(site: WebSite) -> tuple:
    """(PSS MB, RSS MB, processes) summed over every process of the dyno."""
    pids = site.pids()
    pss = sum(_memory_kb(pid, "Pss:") for pid in pids)
    rss = sum(_memory_kb(pid, "VmRSS:") for pid in pids)
    return pss / 1024, rss / 1024, len(pids)


def _connections(admin: redis.Redis, site_name: str) -> Counter:
    """The site's connections by role (CLIENT LIST names them baton:<site>:<role>)."""
    named = f"baton:{site_name}:"
    return Counter(c["name"][len(named):] for c in admin.client_list() if c["name"].startswith(named))


def _sample(admin, leader: WebSite, sites: dict, seconds: float) -> dict:
    """The largest memory and connection counts seen over ``seconds``."""
    most = {"pss_mb": 0.0, "rss_mb": 0.0, "processes": 0, "connections": {}, "by_role": {},
            "unnamed_connections": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pss, rss, processes = _memory_mb(leader)
        most["pss_mb"], most["rss_mb"] = max(most["pss_mb"], pss), max(most["rss_mb"], rss)
        most["processes"] = max(most["processes"], processes)
        clients = admin.client_list()
        # The server is this measurement's: a connection without a name is a site's too.
        most["unnamed_connections"] = max(most["unnamed_connections"], sum(1 for c in clients if not c["name"]))
        for label, name in sites.items():
            roles = _connections(admin, name)
            if sum(roles.values()) >= sum(most["by_role"].get(label, {}).values()):
                most["by_role"][label] = dict(sorted(roles.items()))
            most["connections"][label] = max(most["connections"].get(label, 0), sum(roles.values()))
        time.sleep(SAMPLE_EVERY_S)
    most["pss_mb"], most["rss_mb"] = round(most["pss_mb"], 1), round(most["rss_mb"], 1)
    return most


def _close(sites) -> None:
    for site in sites:
        try:
            if site.proc.poll() is None or site.pids():
                site.stop()
        finally:
            site.close()


def measure_one(url: str, n: int, prefix: str) -> dict:
    admin = redis.Redis.from_url(url, decode_responses=True, client_name="bench:concurrency", socket_timeout=5)
    raw = redis.Redis.from_url(url, client_name="bench:concurrency-enqueue", socket_timeout=5)
    env = {**PRODUCTION_ENV, "BATON_WORKER_CONCURRENCY": str(n)}
    leader_name, follower_name = f"L{n}", f"F{n}"
    made = []
    try:
        leader = WebSite(leader_name, url, prefix, schedule=SCHEDULE, extra_env=env)
        made.append(leader)
        wait_until(lambda: leader_site(admin, prefix) == leader_name and leader.count("event=worker_start") == n,
                   60, 0.05, f"site {leader_name} to lead with {n} workers")
        follower = WebSite(follower_name, url, prefix, schedule=SCHEDULE, extra_env=env)
        made.append(follower)
        # A following web dyno runs one worker whatever N (workers/pool.py: the
        # others start only when the site is elected).
        wait_until(lambda: follower.count("event=worker_waiting_for_lease") == 1, 60, 0.05,
                   f"site {follower_name}'s worker to wait")
        time.sleep(2)  # the boot's own connections (a first /healthz, imports) settle
        sites = {"leader": leader_name, "follower": follower_name}
        idle = _sample(admin, leader, sites, SAMPLE_S)
        for i in range(n):
            enqueue_tick(raw, prefix, f"sleep{i}", func=JOB, kwargs={"seconds": JOB_S})
        started = time.monotonic()
        wait_until(lambda: leader.count("event=job_start") == n, 30, 0.02, f"{n} jobs to run at once")
        running = _sample(admin, leader, sites, min(SAMPLE_S, max(0.5, JOB_S - 1 - (time.monotonic() - started))))
        wait_until(lambda: leader.count("event=job_end") == n, JOB_S + 30, 0.05, "the jobs to end")
        ran_together = leader.count("event=job_start") == n and not re.search(r"outcome=(?!succeeded)",
                                                                              "\n".join(leader.lines))
        return {
            "processes": {"idle": idle["processes"], "running": running["processes"]},
            "pss_mb": {"idle": idle["pss_mb"], "running": running["pss_mb"]},
            "rss_mb": {"idle": idle["rss_mb"], "running": running["rss_mb"]},
            "connections": {"leader_idle": idle["connections"]["leader"],
                            "leader_running": running["connections"]["leader"],
                            "follower_idle": idle["connections"]["follower"],
                            "unnamed_max": max(idle["unnamed_connections"], running["unnamed_connections"])},
            "connections_by_role": {"leader_idle": idle["by_role"]["leader"],
                                    "leader_running": running["by_role"]["leader"],
                                    "follower_idle": idle["by_role"]["follower"]},
            "jobs_succeeded_together": ran_together,
        }
    finally:
        try:
            _close(made)
        finally:
            admin.close()
            raw.close()


@contextmanager
def _concurrency(n: int):
    """Every site started meanwhile runs n workers (WebSite passes the environment on)."""
    before = os.environ.get("BATON_WORKER_CONCURRENCY")
    os.environ["BATON_WORKER_CONCURRENCY"] = str(n)
    try:
        yield
    finally:
        if before is None:
            del os.environ["BATON_WORKER_CONCURRENCY"]
        else:
            os.environ["BATON_WORKER_CONCURRENCY"] = before


def restart_overlap_peak(url: str, n: int, prefix: str) -> dict:
    with _concurrency(n):
        result = connections_in_restart_overlap(url, prefix=prefix, every_http_worker=True)
    return {"peak": result["peak"]["total"], "phase": result["peak"]["phase"],
            "by_dyno_role": result["peak"]["by_dyno_role"], "limit": result["limit"], "ok": result["peak_fits"],
            "old_dyno_stop_clean": result["old_dyno_stop"]["clean"]}


def measure(url: str, counts=COUNTS, prefix: str = "bench-concurrency", overlap: bool = True) -> dict:
    by_n = {}
    for n in counts:
        by_n[str(n)] = measure_one(url, n, f"{prefix}-{n}")
        if overlap:
            by_n[str(n)]["restart_overlap_peak"] = restart_overlap_peak(url, n, f"{prefix}-overlap-{n}")
    low, high = str(min(counts)), str(max(counts))
    steps = max(1, int(high) - int(low))

    def slope(path):
        a, b = by_n[low], by_n[high]
        for key in path:
            a, b = a[key], b[key]
        return round((b - a) / steps, 2)

    return {
        "job": JOB, "job_s": JOB_S, "web_concurrency": WEB_CONCURRENCY, "timings": PRODUCTION_ENV,
        "by_concurrency": by_n,
        "added_per_worker": {
            "pss_mb_idle": slope(("pss_mb", "idle")), "pss_mb_running": slope(("pss_mb", "running")),
            "rss_mb_idle": slope(("rss_mb", "idle")), "rss_mb_running": slope(("rss_mb", "running")),
            "connections_leader_idle": slope(("connections", "leader_idle")),
            "connections_leader_running": slope(("connections", "leader_running")),
            "connections_follower_idle": slope(("connections", "follower_idle")),
        },
    }


def render(results) -> str:
    rows = []
    for n, r in results["by_concurrency"].items():
        c = r["connections"]
        overlap = r.get("restart_overlap_peak")
        rows.append([n, f"{r['processes']['idle']} / {r['processes']['running']}",
                     f"{r['pss_mb']['idle']:.0f} / {r['pss_mb']['running']:.0f} MB",
                     f"{r['rss_mb']['idle']:.0f} / {r['rss_mb']['running']:.0f} MB",
                     f"{c['leader_idle']} / {c['leader_running']}", c["follower_idle"],
                     f"{overlap['peak']} ({'<=' if overlap['ok'] else 'over'} {overlap['limit']})" if overlap else "—",
                     "yes" if r["jobs_succeeded_together"] else "NO"])
    added = results["added_per_worker"]
    rows.append(["+1 worker", "",
                 f"+{added['pss_mb_idle']:.1f} / +{added['pss_mb_running']:.1f} MB",
                 f"+{added['rss_mb_idle']:.1f} / +{added['rss_mb_running']:.1f} MB",
                 f"+{added['connections_leader_idle']:g} / +{added['connections_leader_running']:g}",
                 f"+{added['connections_follower_idle']:g}", "", ""])
    headers = [f"BATON_WORKER_CONCURRENCY (web dyno, WEB_CONCURRENCY={results['web_concurrency']})",
               "processes idle / N jobs", "PSS idle / N jobs", "RSS idle / N jobs",
               "connections, leader idle / N jobs", "follower idle", "restart overlap peak, 3 dynos",
               "N jobs ran at once"]
    return "\n".join([table(headers, rows),
                      f"(PSS and RSS summed over every process of the dyno, of a {DYNO_MB} MB dyno; "
                      f"Heroku's Mini Redis allows {MINI_CONNECTIONS} connections for every site together)"])


def main() -> int:
    from tests.support.redis_server import RedisServer

    with RedisServer() as server:
        results = measure(server.url)
    print(json.dumps(results, indent=2))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
