"""An entry that always fails (every second), one that fails twice per tick and
then succeeds on its second retry (run by hand), and a 1 s entry that must stay
on time whatever the webhook does."""
from workers.entries import Entry

SCHEDULE = [
    Entry("failing", "tests.support.jobs:always_fails", every=1),
    Entry("flaky", "tests.support.operate_jobs:fails_twice", every=3600, retries=2, retry_backoff=1),
    Entry("beat", "tests.support.operate_jobs:timed_run", every=1),
]
