"""A 1 s entry to pause and resume, a daily one to run by hand, and one that
fails twice per tick before it succeeds (retried)."""
from workers.entries import Entry

SCHEDULE = [
    Entry("beat", "tests.support.operate_jobs:timed_run", every=1),
    Entry("daily", "tests.support.operate_jobs:timed_run", cron="0 3 * * *"),
    Entry("flaky", "tests.support.operate_jobs:fails_twice", every=3600, retries=3, retry_backoff=1),
]
