"""Redis Sentinel failovers under Baton's election (issue 14).

On a primary, a replica and three sentinels on loopback
(tests/support/sentinel.py: down-after 1 s, Sentinel's internal periods
lowered as the test support does), two electors of two sites, in this
process, over ``redis+sentinel://`` URLs, at the tests' fast timings (ttl
1 s, renew every 0.2 s, deadline 0.7 s; the failover quarantine is the ttl).
For each mode — replica acknowledgement off, and on (BATON_REDIS_REPLICAS_ACK=1)
— ``rounds`` times:

- wait until one leads, the replica is in sync and the sentinels see it;
- SIGKILL the primary (t0);
- ``kill_to_elected``: t0 → the next ``on_elected`` of either site;
- ``demoted_to_elected``: the old leader's ``on_demoted`` → that term: the
  leaderless time proper (the old leader believes until its renew deadline);
- the sentinels promote the replica, and the killed node comes back, empty,
  as its replica (as Heroku replaces a lost standby); with acknowledgement on,
  no term can start before that, since no replica acknowledges anything.

Then the cost of acknowledgement on a healthy pair: ``renew_ms``, the time of
``Lease.renew`` (one script, plus WAIT with acknowledgement on), ``RENEWS``
times each, interleaved.
"""

from __future__ import annotations

import os
import threading
import time

from bench.standalone import write_and_print
from election import Callbacks, ElectionConfig, Elector, Identity, Lease
from tests.support.sentinel import SentinelDeployment
from tests.support.waiting import wait_until

CONFIG = ElectionConfig(ttl=1.0, renew_interval=0.2, renew_deadline=0.7, retry_backoff_max=0.2)
REPLICA_ACK_TIMEOUT_S = CONFIG.renew_interval / 2  # as workers/settings.py derives it
RENEWS = 500


class _Terms:
    def __init__(self):
        self.lock = threading.Lock()
        self.events = []  # (mono, site, kind)

    def callbacks(self, site):
        def add(kind):
            def record(_value):
                with self.lock:
                    self.events.append((time.monotonic(), site, kind))
            return record
        return Callbacks(on_elected=add("elected"), on_demoted=add("demoted"))

    def first(self, kind, after, site=None):
        with self.lock:
            found = [e for e in self.events if e[2] == kind and e[0] > after and (site is None or e[1] == site)]
        return found[0] if found else None


def _failovers(rounds: int, ack: int) -> dict:
    kill_to_elected, demoted_to_elected = [], []
    with SentinelDeployment() as d:
        terms = _Terms()
        electors = [Elector(Lease.from_url(d.url(), Identity(site=site, dyno="bench"), CONFIG.ttl_ms,
                                           prefix="bench-failover", replicas_ack=ack,
                                           replica_ack_timeout=REPLICA_ACK_TIMEOUT_S, client_name=f"bench:{site}"),
                            CONFIG, terms.callbacks(site)).start() for site in ("a", "b")]
        try:
            for _ in range(rounds):
                wait_until(lambda: any(e.is_leader for e in electors), 60, 0.01, "a leader")
                d.wait_replicas_synced()
                leader = next(e for e in electors if e.is_leader).lease.identity.site
                killed_at = time.monotonic()
                old = d.kill_primary()
                d.wait_for_new_primary(old)
                d.restart_killed_as_replica()
                wait_until(lambda: terms.first("elected", killed_at), 60, 0.01, "a term after the failover")
                elected = terms.first("elected", killed_at)
                demoted = terms.first("demoted", killed_at, site=leader)
                kill_to_elected.append((elected[0] - killed_at) * 1000)
                if demoted is not None:
                    demoted_to_elected.append((elected[0] - demoted[0]) * 1000)
        finally:
            for elector in electors:
                elector.stop(timeout=5)
    return {"kill_to_elected_ms": kill_to_elected, "demoted_to_elected_ms": demoted_to_elected}


def _renew_cost(count: int) -> dict:
    timings = {0: [], 1: []}
    with SentinelDeployment(proxied=False) as d:
        leases = {ack: Lease.from_url(d.url(), Identity(site=f"r{ack}", dyno="bench"), 10_000,
                                      prefix=f"bench-renew-{ack}", replicas_ack=ack, replica_ack_timeout=1.0)
                  for ack in timings}
        tokens = {ack: lease.acquire().token for ack, lease in leases.items()}
        for _ in range(count):
            for ack, lease in leases.items():
                started = time.perf_counter()
                lease.renew(tokens[ack], timeout=2.0)
                timings[ack].append((time.perf_counter() - started) * 1000)
        for lease in leases.values():
            lease.close()
    return {"without_ack_ms": timings[0], "with_ack_ms": timings[1]}


def measure(rounds: int) -> dict:
    return {"settings": "primary + replica + 3 sentinels on loopback, down-after 1 s; ttl 1 s, renew 0.2 s, "
                        "deadline 0.7 s, quarantine = ttl; the killed node restarts as the new replica",
            "without_ack": _failovers(rounds, 0), "with_ack": _failovers(rounds, 1), "renew": _renew_cost(RENEWS)}


def summarize(results) -> dict:
    from bench.stats import summary

    # Failovers are few: each one's figure is kept beside the percentiles.
    return {"settings": results["settings"],
            **{mode: {key: {**summary(values), **({"each": [round(v) for v in values]} if mode != "renew" else {})}
                      for key, values in results[mode].items()}
               for mode in ("without_ack", "with_ack", "renew")}}


def render(s) -> str:
    from bench.stats import fmt_ms, table

    def pair(v):
        return f"{fmt_ms(v.get('p50'))} / {fmt_ms(v.get('p99'))}"

    rows = []
    for mode, label in (("without_ack", "acknowledgement off"), ("with_ack", "BATON_REDIS_REPLICAS_ACK=1")):
        r = s[mode]
        rows.append([f"primary SIGKILLed → next term, {label} ({r['kill_to_elected_ms']['n']} failovers)",
                     pair(r["kill_to_elected_ms"]), "<= down-after + failover + ttl (1 + ~2 + 1 s)"])
        rows.append(["  old leader steps down → next term (leaderless)", pair(r["demoted_to_elected_ms"]), "—"])
    renew = s["renew"]
    rows.append([f"renew, acknowledgement off / on ({renew['with_ack_ms']['n']} each)",
                 f"{pair(renew['without_ack_ms'])}  |  {pair(renew['with_ack_ms'])}", "WAIT within the interval"])
    return "\n".join([table(["Redis Sentinel failover", "p50 / p99", "bound"], rows), f"({s['settings']})"])


def main() -> int:
    """On its own (make bench runs it too, into latest.json): a file of its own."""
    rounds = int(os.environ.get("BENCH_FAILOVER_ROUNDS", "10"))
    return write_and_print("failover", summarize(measure(rounds)), render)


if __name__ == "__main__":
    raise SystemExit(main())
