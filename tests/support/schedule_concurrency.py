"""A long entry beside a 1 s one (tests/test_concurrency.py): with one worker
per site the 1 s ticks wait behind the long job and expire past their 2 s
grace; with BATON_WORKER_CONCURRENCY=2 they run while it runs."""

from workers.entries import Entry

SCHEDULE = [
    Entry("long", "tests.support.jobs:record_tick", kwargs={"sleep": 5}, every=6, timeout=60),
    Entry("beat", "tests.support.jobs:record_tick", every=1, grace=2),
]
