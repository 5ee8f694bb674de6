"""Real failovers under Baton sites: a primary, a replica and three
sentinels on loopback (tests/support/sentinel.py), two gunicorn sites with
REDIS_URL=redis+sentinel://..., a 1 s entry whose runs are written to a file
(Redis itself may lose them). The lease ttl is 1 s, so the quarantine after a
failover is 1 s too.

With BATON_REDIS_REPLICAS_ACK=1 the checks are strict: terms never overlap,
tokens never repeat, no tick runs twice. Without it, what a failover costs is
counted and printed (see the README's "Replicated Redis")."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from election import Keys, ready_sites
from tests.support.jobs import runs_in_file
from tests.support.sentinel import SentinelDeployment
from tests.support.waiting import wait_until

ACK = {"BATON_REDIS_REPLICAS_ACK": "1"}

# Sentinel's down-after (1 s) + a failover (~1-2 s here) + the quarantine
# (ttl, 1 s) + the first tick's second: measured 3-5 s; this bound only
# keeps a broken failover from hanging the test.
LEADER_AGAIN_WITHIN_S = 30


@pytest.fixture
def deployment():
    with SentinelDeployment() as d:
        yield d


def _started(web, d, prefix, tmp_path, ack):
    """Two sites, a leading, b following, ticks running. Returns the run
    file, the sites, a sentinel-managed client, and the token of a's term."""
    run_file = tmp_path / "runs.jsonl"
    a, b, watcher = _sites(web, d, prefix, run_file, ack)
    return run_file, a, b, watcher, max(run["token"] for run in runs_in_file(run_file))


def _sites(web, d, prefix, run_file, ack):
    env = {"BATON_TEST_RUN_FILE": str(run_file), **(ACK if ack else {})}
    a = web("a", d.url(), prefix, "tests.support.schedule_1s_file", extra_env=env)
    watcher = d.master_for()
    # A term a's elector announced (with acknowledgement, a lease written and
    # given back unacknowledged shows in Redis for a moment), and a ready
    # site: a site leading before its worker is up hands over to b.
    wait_until(lambda: _leader(watcher, prefix) == "a" and a.has("event=elected") and _ready(watcher, prefix, "a"),
               timeout=30, what="a leads, ready")
    b = web("b", d.url(), prefix, "tests.support.schedule_1s_file", extra_env=env)
    wait_until(lambda: b.has("event=leader_changed"), timeout=30, what="b follows")
    wait_until(lambda: len(runs_in_file(run_file)) >= 3, timeout=30, what="ticks running")
    return a, b, watcher


def _ready(client, prefix, site):
    try:
        return site in ready_sites(client, prefix)
    except Exception:
        return False


def _leader(client, prefix):
    try:
        return client.hget(Keys(prefix).lease, "site")
    except Exception:
        return None


def _after(runs, moment):
    return [run for run in runs if run["mono"] > moment]


def _overlaps(runs) -> int:
    """Runs that started under an older token after a newer token's run had
    started: two terms at once."""
    newest, late = 0, 0
    for run in sorted(runs, key=lambda run: run["mono"]):
        if run["token"] < newest:
            late += 1
        newest = max(newest, run["token"])
    return late


def _tokens_shared(runs) -> list:
    sites_of = {}
    for run in runs:
        sites_of.setdefault(run["token"], set()).add(run["site"])
    return [token for token, sites in sites_of.items() if len(sites) > 1]


def _ticks_twice(runs) -> list:
    return [tick for tick, count in Counter(run["tick"] for run in runs).items() if count > 1]


def _new_term_runs(run_file, since, first_token):
    return [run for run in _after(runs_in_file(run_file), since) if run["token"] > first_token]


@pytest.mark.parametrize("ack", [True, False], ids=["replicas_ack", "no_ack"])
def test_primary_killed_while_a_site_leads(web, deployment, prefix, tmp_path, ack):
    run_file, a, b, watcher, first_token = _started(web, deployment, prefix, tmp_path, ack=ack)
    killed_at = time.monotonic()
    old = deployment.kill_primary()
    deployment.wait_for_new_primary(old)
    # The platform replaces the lost node (Heroku's standby, a Sentinel
    # setup's restarted server): with one replica, acknowledged writes need it.
    deployment.restart_killed_as_replica()
    wait_until(lambda: _new_term_runs(run_file, killed_at, first_token), timeout=LEADER_AGAIN_WITHIN_S,
               what="a tick run in a new term after the failover")
    leaderless = _new_term_runs(run_file, killed_at, first_token)[0]["mono"] - killed_at
    time.sleep(3)
    runs = runs_in_file(run_file)
    print(f"failover ack={ack}: first run of the new term {leaderless:.2f} s after the primary's SIGKILL; "
          f"overlapping runs {_overlaps(runs)}, tokens shared {_tokens_shared(runs)}, "
          f"ticks run twice {len(_ticks_twice(runs))}")
    assert a.has("event=redis_primary_changed") or b.has("event=redis_primary_changed")
    assert _tokens_shared(runs) == []  # the quarantine lifts the fence past every token seen
    assert _overlaps(runs) == 0
    if ack:
        assert _ticks_twice(runs) == []
    watcher.close()


def test_partitioned_primary_with_replica_ack(web, deployment, prefix, tmp_path):
    """Site A stays with the old primary (its connections pass the partition);
    the sentinels, the replica and site B are cut off from it. A's renewals
    are no longer acknowledged, so A steps down by its renew deadline, before
    the sentinels even promote the replica. The new primary has no replica
    until the partition heals (the old primary then becomes its replica), and
    no term starts on writes nobody acknowledges: nothing runs meanwhile, on
    either side."""
    run_file, a, b, watcher, first_token = _started(web, deployment, prefix, tmp_path, ack=True)
    old = deployment.primary()
    cut_at = time.monotonic()
    deployment.partition_primary(spare="baton:a:")
    wait_until(lambda: a.has("reason=renew_deadline_missed"), timeout=15, what="a steps down")
    deployment.wait_for_new_primary(old)
    time.sleep(2)
    # A tick claimed and acknowledged just before the cut may still start
    # within the next second; nothing later runs anywhere.
    assert [r for r in runs_in_file(run_file) if r["mono"] > cut_at + 1.0] == []
    healed_at = time.monotonic()
    deployment.heal()
    deployment.wait_for_replica(old)
    wait_until(lambda: _new_term_runs(run_file, healed_at, first_token), timeout=LEADER_AGAIN_WITHIN_S,
               what="a new term's runs once the new primary has a replica")
    time.sleep(3)
    runs = runs_in_file(run_file)
    assert _overlaps(runs) == 0 and _tokens_shared(runs) == [] and _ticks_twice(runs) == []
    watcher.close()


def test_partitioned_primary_without_replica_ack_runs_ticks_on_both_sides(web, deployment, prefix, tmp_path):
    """What the README says happens without BATON_REDIS_REPLICAS_ACK: site A,
    on the old primary's side, keeps renewing its lease there and running
    ticks, while B leads on the promoted replica after the quarantine — two
    terms at once until the partition heals. Counted here; the tokens still
    never repeat (B's term starts above the fence's floor)."""
    run_file, a, b, watcher, first_token = _started(web, deployment, prefix, tmp_path, ack=False)
    old = deployment.primary()
    cut_at = time.monotonic()
    deployment.partition_primary(spare="baton:a:")
    deployment.wait_for_new_primary(old)
    wait_until(lambda: [r for r in _new_term_runs(run_file, cut_at, first_token) if r["site"] == "b"],
               timeout=LEADER_AGAIN_WITHIN_S, what="b runs ticks on the new primary")
    time.sleep(3)
    healed_at = time.monotonic()
    deployment.heal()
    deployment.wait_for_replica(old)
    time.sleep(3)
    runs = runs_in_file(run_file)
    a_during = [r for r in runs if cut_at < r["mono"] < healed_at and r["site"] == "a"]
    twice = _ticks_twice(runs)
    print(f"partition without ack: site A ran {len(a_during)} ticks on the old primary during the partition; "
          f"{len(twice)} ticks ran on both sides; overlapping runs {_overlaps(runs)}")
    assert a_during and twice  # the danger the README states, seen
    assert _tokens_shared(runs) == []
    assert all(r["token"] > first_token + 1000 for r in runs if r["site"] == "b" and r["mono"] > cut_at)
    watcher.close()


def test_manual_failover_hands_over_without_a_missed_tick(web, deployment, prefix, tmp_path):
    run_file, a, b, watcher, first_token = _started(web, deployment, prefix, tmp_path, ack=True)
    started = time.monotonic()
    deployment.failover()
    wait_until(lambda: _new_term_runs(run_file, started, first_token), timeout=LEADER_AGAIN_WITHIN_S,
               what="a new term's runs")
    time.sleep(3)
    runs = runs_in_file(run_file)
    ticks = sorted({run["tick"] for run in runs})
    assert _ticks_twice(runs) == [] and _overlaps(runs) == 0 and _tokens_shared(runs) == []
    # Every second from the first run to the last ran once (catch_up fills
    # the quarantine's gap).
    seconds = [round(tick) for tick in ticks]
    assert seconds == list(range(seconds[0], seconds[-1] + 1)), "a tick was missed"
    watcher.close()
