"""Several electors under churn: stops, restarts, step-downs, dropped
connections and a paused Redis, for long enough to cover minutes of default
timings (FAST runs 10x faster than the defaults)."""

import os
import random
import threading
import time

from election import Callbacks
from tests.conftest import FAST, wait_until

CHURN_SECONDS = float(os.environ.get("BATON_CHURN_SECONDS", "30"))
CANDIDATES = 4


class Sampler(threading.Thread):
    """Samples every elector's belief, twice per round.

    Two electors reporting the same term (token) in both passes of one round
    were leaders at overlapping instants: X leads over [x1, x2] and Y over
    [y1, y2] with x1 < y1 < x2 < y2 — a proven overlap, not a sampling artefact
    (a term is one unbroken interval, so the same token at both ends means
    leadership all along).
    """

    def __init__(self, electors_snapshot):
        super().__init__(daemon=True)
        self.snapshot = electors_snapshot
        self.rounds = 0
        self.overlaps = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            electors = self.snapshot()
            first = [(e, e.term()) for e in electors]
            second = [(e, e.term()) for e in electors]
            steady = [t1 for (e, t1), (_, t2) in zip(first, second) if t1 is not None and t1 == t2]
            if len(steady) > 1:
                self.overlaps.append(steady)
            self.rounds += 1
            time.sleep(0.001)


def test_at_most_one_leader_and_increasing_tokens_under_churn(make_elector, shared_redis, prefix):
    rng = random.Random(20261122)
    lock = threading.Lock()
    elected = []  # (monotonic time, token) from every elector's on_elected
    serial = iter(range(10_000))

    def callbacks():
        def on_elected(token):
            with lock:
                elected.append((time.monotonic(), token))
        return Callbacks(on_elected=on_elected)

    def new_elector():
        return make_elector(shared_redis.url, prefix, f"{prefix}-{next(serial)}", callbacks=callbacks())

    live = [new_elector() for _ in range(CANDIDATES)]
    sampler = Sampler(lambda: list(live))
    sampler.start()
    admin = shared_redis.client()
    actions = {"restart": 0, "step_down": 0, "kill_connection": 0, "pause_redis": 0}
    deadline = time.monotonic() + CHURN_SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.5))
            action = rng.choice(list(actions))
            leader = next((e for e in live if e.is_leader), None)
            if action == "restart":
                victim = leader if leader and rng.random() < 0.7 else rng.choice(live)
                live.remove(victim)
                victim.stop()
                live.append(new_elector())
            elif action == "step_down" and leader:
                leader.step_down()
            elif action == "kill_connection":
                target = f"baton:{(leader or rng.choice(live)).lease.identity.site}:elector"
                for client in admin.client_list():
                    if client["name"] == target:
                        admin.client_kill_filter(_id=client["id"])
            elif action == "pause_redis":
                # Longer than the renew deadline: the leader must fence itself.
                admin.execute_command("CLIENT", "PAUSE", int(FAST.renew_deadline * 1000 + 300), "ALL")
                time.sleep(FAST.renew_deadline + 0.4)
            else:
                continue
            actions[action] += 1
    finally:
        sampler.stop.set()
        sampler.join()

    assert sampler.overlaps == []
    assert sampler.rounds > 1000
    assert all(count > 0 for count in actions.values()), actions
    wait_until(lambda: any(e.is_leader for e in live), timeout=5, what="a leader at the end")

    # The history stream is in the server's order of acquisition: successive
    # leaders' tokens must strictly increase there, and every term an elector
    # believed in must be one of them.
    history_tokens = [int(f["token"]) for _, f in admin.xrange(f"{prefix}:history")
                      if f["event"] in ("acquired", "takeover", "reacquired")]
    assert all(a < b for a, b in zip(history_tokens, history_tokens[1:])), history_tokens
    with lock:
        believed = [token for _, token in elected]
    assert len(believed) >= 20 and len(set(believed)) == len(believed)
    assert set(believed) <= set(history_tokens)
