"""Graceful handoff between two contenders in separate processes:
release sent by the leader → the other contender leads."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Child:
    def __init__(self, kind, url, key, name):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.handoff_child", kind, url, key, name],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.events: "queue.Queue" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def next(self, event, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            item = self.events.get(timeout=max(0.001, deadline - time.monotonic()))
            if item["event"] == event:
                return item["t"]

    def tell(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class _Pair:
    """Two contenders of one kind taking turns at one lease (lock)."""

    def __init__(self, kind, url, key):
        first = _Child(kind, url, key, "first")
        first.next("leading")
        second = _Child(kind, url, key, "second")
        self.children = (first, second)
        self.leader, self.waiter = first, second

    def handoff_ms(self) -> float:
        self.leader.tell("release")
        sent = self.leader.next("release_sent")
        took = self.waiter.next("leading")
        # Only now may the releaser compete again: it waits for the next round.
        self.leader.tell("compete")
        self.leader, self.waiter = self.waiter, self.leader
        return (took - sent) * 1000

    def close(self):
        for child in self.children:
            child.close()


def measure(kinds, url: str, rounds: int, key_prefix: str) -> dict:
    """Graceful handoff for each of ``kinds`` ("baton", "redis_lock"), ms per
    round, as ``{kind: samples}``.

    The kinds' rounds are interleaved (round i: A then B, round i+1: B then
    A), so a noisy spell on the machine — another VM on the host, a cron job —
    lands on both tools alike instead of on whichever ran in that minute: the
    p99s differ by a fraction of a millisecond and the comparison is only fair
    if both see the same machine. Only one handoff runs at a time; before each,
    the machine gets 100 ms for the previous one's aftermath (the releaser
    back in the race and blocked waiting, the other pair idle).
    """
    pairs = {}
    try:
        for kind in kinds:
            pairs[kind] = _Pair(kind, url, f"{key_prefix}-{kind}")
        time.sleep(0.5)  # every waiter is up and blocked
        samples = {kind: [] for kind in kinds}
        order = list(kinds)
        for _ in range(rounds):
            for kind in order:
                time.sleep(0.1)
                samples[kind].append(pairs[kind].handoff_ms())
            order.reverse()
        return samples
    finally:
        for pair in pairs.values():
            pair.close()
