"""Three entries whose runs (3 s) outlast their period (2 s), one per overlap policy."""
from workers.entries import Entry

SCHEDULE = [
    Entry("skip", "tests.support.operate_jobs:timed_run", every=2, kwargs={"seconds": 3}, overlap="skip"),
    Entry("buffer", "tests.support.operate_jobs:timed_run", every=2, kwargs={"seconds": 3}, overlap="buffer_one",
          grace=10),
    Entry("allow", "tests.support.operate_jobs:timed_run", every=2, kwargs={"seconds": 3}, overlap="allow"),
]
