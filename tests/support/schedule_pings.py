"""Entries pinged at a monitor (BATON_TEST_PING_URL: a tests.support.webhook receiver)."""
import os

from workers.entries import Entry

_BASE = os.environ.get("BATON_TEST_PING_URL", "http://127.0.0.1:9")

SCHEDULE = [
    Entry("good", "tests.support.operate_jobs:timed_run", every=2, ping_url=f"{_BASE}/good"),
    Entry("bad", "tests.support.jobs:always_fails", every=2, ping_url=f"{_BASE}/bad"),
]
