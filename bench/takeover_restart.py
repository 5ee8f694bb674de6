"""Takeover lag after expiry, right after a site restart.

The sequence from the issue (two gunicorn sites, Redis 7.0): a few graceful
handoffs (the leader is SIGTERMed, releases, and is restarted as a fresh
process with a fresh connection), then — about a second after the last
restart — the leader is SIGKILLed and the other site, a follower that was
just handed leadership away from or just restarted, has to wait the lease
out. The tail of that takeover used to be ~1.8 s (a 2 s socket timeout on a
wait the server never answered), so each round here ends with such a crash.

Both sites are real elector processes (tests/support/elector_process.py).
The lag is measured on the server's clock: the new lease's ``acquired_at``
minus the dead leader's ``renewed_at + ttl_ms`` (read after the SIGKILL, so
no renewal can follow it).

    python -m bench.takeover_restart [ROUNDS]

starts its own redis-server (tests.support.redis_server) and prints
p50/p99/max (about 3.5 s a round). The children run from the directory the
imported ``election`` package lives in, so another checkout is benched with
``cd OTHER && PYTHONPATH=OTHER python /path/to/bench/takeover_restart.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import election
from election import ElectionConfig, Identity, Lease

# The tree the children import `election` from: this checkout, or whichever
# one PYTHONPATH put first for the parent.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(election.__file__)))

# Short timings so 50+ crash rounds take minutes. renew_deadline - renew_interval
# (follower_wait_max) is 0.9 s, under the 2 s ttl, so a follower takes several
# waits across one lease, ending with short ones near its expiry as in
# production.
SHORT = ElectionConfig(ttl=2.0, renew_interval=0.5, renew_deadline=1.4)

# Bounds on every wait: nothing here may hang a benchmark run.
_EVENT_TIMEOUT_S = 15.0
_EXIT_TIMEOUT_S = 10.0


class _Site:
    """One site: an elector process, restarted in place."""

    def __init__(self, url: str, prefix: str, name: str, config: ElectionConfig, log_dir: "str | None", env: dict):
        self.url, self.prefix, self.name, self.config = url, prefix, name, config
        self.log_dir, self.env = log_dir, env
        self.proc: "subprocess.Popen | None" = None
        self.events: list = []
        self._cond = threading.Condition()
        self._boots = 0

    def start(self) -> None:
        self._boots += 1
        with self._cond:
            self.events = []
        stderr = (open(os.path.join(self.log_dir, f"{self.name}.{self._boots}.err"), "w")
                  if self.log_dir else subprocess.DEVNULL)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.elector_process", self.url, self.prefix, self.name,
                 str(self.config.ttl), str(self.config.renew_interval), str(self.config.renew_deadline)],
                cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if proc is self.proc:
                    self.events.append(event)
                    self._cond.notify_all()

    def wait_event(self, name: str, timeout: float = _EVENT_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event["event"] == name:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: no {name!r} event within {timeout} s")
                self._cond.wait(left)

    def clear_events(self) -> None:
        with self._cond:
            self.events = []

    def terminate(self) -> None:
        """SIGTERM and wait for the graceful stop (release included)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(_EXIT_TIMEOUT_S)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(_EXIT_TIMEOUT_S)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def takeover_after_restart(
    url: str,
    rounds: int,
    prefix: str = "bench-takeover-restart",
    config: ElectionConfig = SHORT,
    handoffs: int = 2,
    kill_after: float = 1.0,
    restart: str = "leader",
    details: "list | None" = None,
) -> list:
    """Per-round lag (ms, server clock) from the crashed leader's lease
    expiry to the other site's acquisition.

    Each round: ``handoffs`` graceful handoffs (SIGTERM the leader, wait for
    the other site's election, restart the stopped site), then
    ``kill_after`` s after the last restart began SIGKILL the leader and
    wait for the other site to be elected; the killed site is restarted for
    the next round. ``restart="follower"`` makes the last restart the
    follower's instead (SIGTERM cuts its wait; nothing is released).
    ``details``, if given, gets one dict per round and, last, the directory
    holding the children's stderr (kept only then).
    """
    if restart not in ("leader", "follower"):
        raise ValueError(f"restart must be 'leader' or 'follower', got {restart!r}")
    log_dir = tempfile.mkdtemp(prefix="baton-takeover-restart-") if details is not None else None
    env = _child_env()
    admin = Lease.from_url(url, Identity(site="observer", dyno="bench"), config.ttl_ms, prefix=prefix,
                           role="observer")
    sites = [_Site(url, prefix, name, config, log_dir, env) for name in ("site-a", "site-b")]
    samples = []
    started = time.monotonic()
    # No round may take longer than this (a handoff is ~0.5 s, a crash ~ttl).
    round_budget = handoffs * 5 + kill_after + config.ttl * 5 + 10

    def leader_site() -> _Site:
        deadline = time.monotonic() + _EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            record = admin.read()
            if record is not None:
                for site in sites:
                    if site.name == record.site and site.proc.poll() is None:
                        return site
            time.sleep(0.005)
        raise RuntimeError("nobody leads")

    try:
        for site in sites:
            site.start()
        for site in sites:
            site.wait_event("started")
        for number in range(rounds):
            round_deadline = time.monotonic() + round_budget
            restarted_at = time.monotonic()
            for _ in range(handoffs):
                leader = leader_site()
                other = sites[1 - sites.index(leader)]
                other.clear_events()
                leader.terminate()
                other.wait_event("elected")
                leader.start()
                restarted_at = time.monotonic()
                leader.wait_event("started")
            if restart == "follower":
                follower = sites[1 - sites.index(leader_site())]
                follower.terminate()
                follower.start()
                restarted_at = time.monotonic()
                follower.wait_event("started")
            # ~kill_after s after the restart, the leader dies without a word.
            time.sleep(max(0.0, restarted_at + kill_after - time.monotonic()))
            leader = leader_site()
            follower = sites[1 - sites.index(leader)]
            follower.clear_events()
            leader.kill()
            time.sleep(0.01)  # nothing more arrives from a dead process, but let its socket close
            dead = admin.read()
            if dead is None or dead.site != leader.name:
                raise RuntimeError(f"round {number}: lease not the dead leader's after the kill: {dead}")
            elected = follower.wait_event("elected", min(_EVENT_TIMEOUT_S, round_deadline - time.monotonic()))
            record = admin.read()
            if record is None or record.site != follower.name:
                raise RuntimeError(f"round {number}: lease not the follower's after its election: {record}")
            lag = record.acquired_at - dead.expires_at
            samples.append(lag)
            if details is not None:
                details.append({"round": number, "lag_ms": lag, "follower": follower.name,
                                "event_lag_ms": round(elected["wall"] * 1000 - dead.expires_at, 1),
                                "expires_at": dead.expires_at, "acquired_at": record.acquired_at,
                                "elapsed_s": round(time.monotonic() - started, 1)})
            leader.start()
            leader.wait_event("started")
        return samples
    finally:
        for site in sites:
            site.close()
        admin.close()
        if details is not None:
            details.append({"log_dir": log_dir})


def main(argv) -> int:
    from bench.stats import fmt_ms, summary
    from tests.support.redis_server import RedisServer

    rounds = int(argv[0]) if argv else 50
    with RedisServer() as server:
        version = server.client().info("server")["redis_version"]
        details: list = []
        started = time.monotonic()
        lags = takeover_after_restart(server.url, rounds, details=details)
        took = time.monotonic() - started
    stats = summary(lags)
    print(f"redis {version}, election from {ROOT}, {stats['n']} crash rounds in {took:.0f} s "
          f"({took / max(1, stats['n']):.1f} s/round)")
    print(f"takeover lag after expiry (server clock): p50 {fmt_ms(stats['p50'])}  "
          f"p99 {fmt_ms(stats['p99'])}  max {fmt_ms(stats['max'])}")
    slow = [d for d in details if d.get("lag_ms", 0) > 20]
    for d in slow:
        print("  slow round:", d)
    print(f"  child logs: {details[-1]['log_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
