"""Leadership follows the workers (issue 15): a worker dyno killed on the
leader site → the schedule runs on another site.

On a redis-server of its own, two sites "a" and "b", each a real gunicorn web
dyno with ``BATON_EMBEDDED_WORKER=false`` (its elector and scheduler, no
worker) beside a worker dyno of the same site (``python -m workers worker``,
tests.support.sites.Proc), at the tests' fast timings (FAST_ENV: ttl 1 s,
renew every 0.2 s) and on tests.support.schedule_1s_file (a tick every
second, each run appended to a file with its wall-clock start). ``rounds``
times:

- wait until a site L leads, its worker runs ticks, and both sites are ready
  (a live mark each in ``election.ready_sites``);
- SIGKILL every process of L's worker dyno (``Proc.crash()``: nothing
  restarts it) — t0;
- ``kill_to_handover``: t0 → the lease names the other site (polled every
  10 ms);
- ``kill_to_first_tick_elsewhere``: t0 → the ``started`` time of the first
  run by another site that started after t0;
- then a new worker dyno for L, and the next round once L is ready again: it
  kills whichever site leads then (the other one, as nothing takes the lease
  back).

Why the numbers are what they are. The killed workers' last mark was made up
to READY_BEAT_S (1 s) before t0 and lasts READY_LIVE_S (3 s), so L stops
counting as ready 2-3 s after t0 (``mark_left_at_kill``: what the mark had
left). L's elector sees it at its first renewal after that — within one
renew_interval (0.2 s) — and, since the other site is ready and waiting,
releases; the waiting site takes the lease at once. Hence the handover bound
READY_LIVE_S + renew_interval. The other site's worker, told of the new term
by push, then runs the next tick: the ticks L's scheduler queued meanwhile
wait in the deployment's queue (catch_up) and run at once, or, with nothing
queued, the next tick comes within one tick period. Hence the bound for the
first tick: READY_LIVE_S + renew_interval + the tick period.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from bench.standalone import write_and_print
from bench.stats import fmt_ms, summary, table
from election import ready_sites
from tests.support.jobs import runs_in_file
from tests.support.lease import leader_site
from tests.support.redis_server import RedisServer
from tests.support.schedule_1s_file import SCHEDULE as _TICK_SCHEDULE
from tests.support.sites import FAST_ENV, Proc
from tests.support.waiting import wait_until
from tests.support.web import WebSite
from workers.presence import READY_LIVE_S

SCHEDULE = "tests.support.schedule_1s_file"
PREFIX = "bench-eligibility"
SITES = ("a", "b")
RENEW_INTERVAL_S = float(FAST_ENV["BATON_RENEW_INTERVAL"])
TICK_PERIOD_S = float(_TICK_SCHEDULE[0].every)
HANDOVER_BOUND_S = READY_LIVE_S + RENEW_INTERVAL_S
FIRST_TICK_BOUND_S = HANDOVER_BOUND_S + TICK_PERIOD_S
TIMEOUT_S = 30.0  # every wait: far above the bounds, only so nothing hangs
POLL_S = 0.01


def _worker_dyno(site: WebSite) -> Proc:
    """A worker dyno of ``site`` (its web dyno's environment, no dyno tag)."""
    return Proc(["worker"], {**site.env, "BATON_EMBEDDED_WORKER": "false"})


def _steady(r, run_file: str, since: float):
    """The leading site, once it leads, both sites are ready and it ran a tick
    that started after ``since`` (wall clock); else None."""
    leader = leader_site(r, PREFIX)
    if leader is None or not set(SITES) <= set(ready_sites(r, PREFIX)):
        return None
    if not any(run["site"] == leader and run["started"] > since for run in runs_in_file(run_file)):
        return None
    return leader


def _round(r, run_file: str, leader: str, workers: dict) -> dict:
    other = next(s for s in SITES if s != leader)
    marks = ready_sites(r, PREFIX).get(leader, {})
    mark_left_ms = max(marks.values()) if marks else None
    killed_wall, killed = time.time(), time.monotonic()
    workers[leader].crash()
    handover_ms = first_ms = None
    deadline = killed + TIMEOUT_S
    while handover_ms is None or first_ms is None:
        now = time.monotonic()
        if handover_ms is None and leader_site(r, PREFIX) == other:
            handover_ms = (now - killed) * 1000
        if first_ms is None:
            started = [run["started"] for run in runs_in_file(run_file)
                       if run["site"] != leader and run["started"] > killed_wall]
            if started:
                first_ms = (min(started) - killed_wall) * 1000
        if now > deadline:
            raise RuntimeError(f"timed out after {TIMEOUT_S:g} s: the lease moved: {handover_ms is not None}, "
                               f"another site ran a tick: {first_ms is not None} (killed: {leader})")
        time.sleep(POLL_S)
    return {"leader": leader, "kill_to_handover_ms": handover_ms, "kill_to_first_tick_elsewhere_ms": first_ms,
            "mark_left_at_kill_ms": mark_left_ms}


def measure(rounds: int) -> dict:
    """``rounds`` kills (module docstring); raw figures, in ms."""
    run_dir = tempfile.mkdtemp(prefix="baton-eligibility-")
    run_file = os.path.join(run_dir, "runs.jsonl")
    env = {"BATON_TEST_RUN_FILE": run_file, "BATON_EMBEDDED_WORKER": "false"}
    each = []
    webs, workers = {}, {}
    try:
        with RedisServer() as server:
            r = server.client()
            try:
                for name in SITES:
                    webs[name] = WebSite(name, server.url, PREFIX, schedule=SCHEDULE, extra_env=env)
                    workers[name] = _worker_dyno(webs[name])
                for _ in range(rounds):
                    since = time.time()
                    leader = wait_until(lambda: _steady(r, run_file, since), TIMEOUT_S, 0.05,
                                        "a leader running ticks, both sites ready")
                    each.append(_round(r, run_file, leader, workers))
                    workers[leader].close()
                    workers[leader] = _worker_dyno(webs[leader])
                    wait_until(lambda: leader in ready_sites(r, PREFIX), TIMEOUT_S, 0.05,
                               f"{leader}'s new worker dyno to make it ready")
            finally:
                for dyno in [*workers.values(), *webs.values()]:
                    dyno.close()
                r.close()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {key: [e[key] for e in each]
            for key in ("leader", "kill_to_first_tick_elsewhere_ms", "kill_to_handover_ms", "mark_left_at_kill_ms")}


def summarize(results) -> dict:
    # Rounds are few: each one's figure is kept beside the percentiles.
    def stats(values):
        values = [v for v in values if v is not None]
        return {**summary(values), "each": [round(v) for v in values]}

    return {
        "settings": (f"two gunicorn sites (BATON_EMBEDDED_WORKER=false) + a worker dyno each, loopback; ttl "
                     f"{FAST_ENV['BATON_LEASE_TTL']} s, renew {RENEW_INTERVAL_S:g} s; a tick every "
                     f"{TICK_PERIOD_S:g} s (catch_up); ready mark lives {READY_LIVE_S:g} s"),
        "bounds_s": {"ready_live": READY_LIVE_S, "renew_interval": RENEW_INTERVAL_S, "tick_period": TICK_PERIOD_S,
                     "kill_to_handover": HANDOVER_BOUND_S, "kill_to_first_tick_elsewhere": FIRST_TICK_BOUND_S},
        "kill_to_first_tick_elsewhere_ms": stats(results["kill_to_first_tick_elsewhere_ms"]),
        "kill_to_handover_ms": stats(results["kill_to_handover_ms"]),
        "mark_left_at_kill_ms": stats(results["mark_left_at_kill_ms"]),
        "killed_leaders": list(results["leader"]),
    }


def render(s) -> str:
    def pair(v):
        return f"{fmt_ms(v.get('p50'))} / {fmt_ms(v.get('p99'))}"

    b = s["bounds_s"]
    tick, handover = s["kill_to_first_tick_elsewhere_ms"], s["kill_to_handover_ms"]
    rows = [
        [f"worker dyno killed on the leader site → first tick run by another site ({tick['n']} rounds)", pair(tick),
         f"<= READY_LIVE_S + renew_interval + {b['tick_period']:g} s (tick period) = "
         f"{b['kill_to_first_tick_elsewhere']:g} s"],
        ["  worker dyno killed → the lease names the other site (handover)", pair(handover),
         f"<= READY_LIVE_S + renew_interval = {b['kill_to_handover']:g} s"],
    ]
    return "\n".join([table(["Leadership follows the workers", "p50 / p99", "bound"], rows), f"({s['settings']})"])


def main() -> int:
    """On its own (make bench runs it too, into latest.json): a file of its own."""
    rounds = int(os.environ.get("BENCH_ELIGIBILITY_ROUNDS", "10"))
    return write_and_print("eligibility", summarize(measure(rounds)), render)


if __name__ == "__main__":
    raise SystemExit(main())
