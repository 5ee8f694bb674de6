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

    def release(self):
        self.proc.stdin.write("release\n")
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


def measure(kind: str, url: str, rounds: int, key: str) -> list:
    """``kind`` is "baton" or "redis_lock". Returns ms per round."""
    first = _Child(kind, url, key, "first")
    first.next("leading")
    second = _Child(kind, url, key, "second")
    time.sleep(0.5)  # the second is up and blocked waiting
    leader, waiter = first, second
    samples = []
    try:
        for _ in range(rounds):
            time.sleep(0.1)  # the waiter is back in its blocking wait
            leader.release()
            sent = leader.next("release_sent")
            took = waiter.next("leading")
            samples.append((took - sent) * 1000)
            leader, waiter = waiter, leader
    finally:
        first.close()
        second.close()
    return samples
